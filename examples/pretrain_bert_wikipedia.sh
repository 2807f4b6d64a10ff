#!/usr/bin/env bash
# BERT pretraining on English Wikipedia, 8 GPUs (one node), MLM + sentence-order head.
#
#   VARIANT=baseline bash examples/pretrain_bert_wikipedia.sh   # the reference's 12 x 768 BERT (megatron init)
#   VARIANT=dslm     bash examples/pretrain_bert_wikipedia.sh   # deep DSLM: 192 x 256, lambda^2 + beta^2 = 1
#   POST_LN=1 ...                                               # original BERT's Post-LN instead of Pre-LN
#
# Knobs: DATA (preprocessed prefix), VOCAB, OUT, NPROC (8), TP (1), PP (1), ITERS, MBS, GBS, LR.
# Data (once): python tools/download_wikipedia.py --output wiki.jsonl   (needs internet; TFDS)
#              python tools/preprocess_data.py --input wiki.jsonl --json-keys text --split-sentences \
#                  --tokenizer-type BertWordPieceLowerCase --vocab-file $VOCAB --output-prefix data/wiki --workers 32
# Checkpoints go to $OUT/<variant>[-postln]; rerunning the same command resumes from there.
set -euo pipefail
cd "$(dirname "$0")/.."
VARIANT=${VARIANT:-baseline}
DATA=${DATA:-data/wiki_text_sentence}
VOCAB=${VOCAB:-data/bert-base-uncased-vocab.txt}
OUT=${OUT:-checkpoints/bert}
NPROC=${NPROC:-8}
TP=${TP:-1}
PP=${PP:-1}
ITERS=${ITERS:-100000}
MBS=${MBS:-32}
GBS=${GBS:-256}

case "$VARIANT" in
  baseline)  # BERT-base shape, megatron's sigma = 0.02 (output projections 0.02/sqrt(2N))
    MODEL=(--num-layers 12 --hidden-size 768 --num-attention-heads 12 --init-scheme megatron)
    LR=${LR:-1e-4} ;;
  dslm)      # same parameter budget, 16x deeper; DSLM init and residual scaling beta^2 = k/N
    MODEL=(--num-layers 192 --hidden-size 256 --num-attention-heads 4 --init-scheme dslm --dslm-k 1)
    LR=${LR:-1e-4} ;;
  *) echo "VARIANT must be baseline or dslm" >&2; exit 2 ;;
esac
NAME=$VARIANT
if [ "${POST_LN:-0}" = 1 ]; then MODEL+=(--apply-residual-connection-post-layernorm); NAME+=-postln; fi
SAVE="$OUT/$NAME"
mkdir -p "$SAVE"

torchrun --standalone --nproc_per_node "$NPROC" pretrain_bert.py \
  "${MODEL[@]}" --seq-length 128 --max-position-embeddings 512 \
  --tensor-model-parallel-size "$TP" --pipeline-model-parallel-size "$PP" \
  --micro-batch-size "$MBS" --global-batch-size "$GBS" --train-iters "$ITERS" \
  --lr "$LR" --min-lr 1e-5 --lr-decay-style linear --lr-warmup-fraction 0.01 --weight-decay 0.01 --clip-grad 1.0 \
  --hidden-dropout 0.1 --attention-dropout 0.1 --bf16 \
  --data-path "$DATA" --split 949,50,1 --mask-prob 0.15 --short-seq-prob 0.1 \
  --tokenizer-type BertWordPieceLowerCase --vocab-file "$VOCAB" \
  --log-interval 100 --eval-interval 1000 --eval-iters 10 --log-moments-interval 1000 \
  --save "$SAVE" --load "$SAVE" --save-interval 5000 --tensorboard-dir "$SAVE/tensorboard"
