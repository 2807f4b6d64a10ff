# Sourced by examples/finetune_{mnli,qqp,race}.sh: an lr x seed sweep of tasks/main.py, one directory per run.
#
# Every run saves to $OUT/<task>/<pretrained name>/lr<LR>_seed<SEED> and resumes from there (--load), so
# runs never share or overwrite a checkpoint directory, and an interrupted sweep picks up where it stopped.
# The model flags must match the pretraining run (VARIANT as in pretrain_bert_wikipedia.sh).
# Knobs: PRETRAINED, VOCAB, OUT, NPROC (8), TP (1), LRS, SEEDS, EPOCHS, MBS, VARIANT, POST_LN, MODEL_ARGS,
# EXTRA_ARGS (appended to every run, e.g. "--use-cpu-initialization").
set -euo pipefail
cd "$(dirname "$0")/.."
VARIANT=${VARIANT:-baseline}
PRETRAINED=${PRETRAINED:-checkpoints/bert/$VARIANT}
VOCAB=${VOCAB:-data/bert-base-uncased-vocab.txt}
OUT=${OUT:-checkpoints/finetune}
NPROC=${NPROC:-8}
TP=${TP:-1}
case "$VARIANT" in
  baseline) MODEL=(--num-layers 12 --hidden-size 768 --num-attention-heads 12 --init-scheme megatron) ;;
  dslm)     MODEL=(--num-layers 192 --hidden-size 256 --num-attention-heads 4 --init-scheme dslm --dslm-k 1) ;;
  *) echo "VARIANT must be baseline or dslm" >&2; exit 2 ;;
esac
if [ "${POST_LN:-0}" = 1 ]; then MODEL+=(--apply-residual-connection-post-layernorm); fi
# MODEL_ARGS="--num-layers 2 ..." replaces the model flags entirely (e.g. a small model pretrained elsewhere).
if [ -n "${MODEL_ARGS:-}" ]; then read -r -a MODEL <<< "$MODEL_ARGS"; fi

# sweep TASK "TASK_ARGS..." : runs every (lr, seed) pair; TASK_ARGS hold --train-data/--valid-data/--seq-length.
sweep() {
  local task=$1; shift
  local pre_name
  pre_name=$(basename "$PRETRAINED")
  for lr in $LRS; do
    for seed in $SEEDS; do
      local save="$OUT/${task,,}/$pre_name/lr${lr}_seed${seed}"
      mkdir -p "$save"
      if grep -qs "finetuning done" "$save/log.txt"; then echo "=== $save finished earlier: skipped"; continue; fi
      echo "=== $task lr=$lr seed=$seed -> $save"
      torchrun --standalone --nproc_per_node "$NPROC" tasks/main.py --task "$task" "${MODEL[@]}" "$@" \
        --max-position-embeddings "${MAX_POS:-512}" --tensor-model-parallel-size "$TP" \
        --micro-batch-size "$MBS" --global-batch-size "$((MBS * NPROC / TP))" --epochs "$EPOCHS" \
        --lr "$lr" --lr-warmup-fraction 0.065 --lr-decay-style linear --weight-decay 0.1 --clip-grad 1.0 \
        --hidden-dropout 0.1 --attention-dropout 0.1 --seed "$seed" \
        --tokenizer-type BertWordPieceLowerCase --vocab-file "$VOCAB" \
        --pretrained-checkpoint "$PRETRAINED" --save "$save" --load "$save" --log-interval 100 ${EXTRA_ARGS:-} \
        2>&1 | tee -a "$save/log.txt"
    done
  done
}
