#!/usr/bin/env bash
# Upstream Megatron-LM's Llama-3 8B launch flags (examples/llama/train_llama3_8b_h100_fp8.sh, MODEL_ARGS: the
# architecture part) at a tiny shape, with --init-scheme dslm appended: RMSNorm (zero-centred weights), SwiGLU,
# RoPE, grouped-query attention, no biases, untied output layer. Trains on CPU in about a minute.
#   bash examples/pretrain_llama_dslm.sh                        # mock data (upstream's default)
#   DATA=data/sample/wiki_text_document VOCAB=data/sample/bert-base-uncased-vocab.txt bash examples/pretrain_llama_dslm.sh
# Knobs: ITERS (default 50), OUT (default runs/llama_dslm), NPROC (default 1); extra arguments go to pretrain_gpt.py.
set -euo pipefail
cd "$(dirname "$0")/.."
ITERS=${ITERS:-50}
OUT=${OUT:-runs/llama_dslm}
NPROC=${NPROC:-1}
export PYTHONWARNINGS=ignore

# Upstream's 8B shape -> tiny (same ratios): 32 -> 8 layers, hidden 4096 -> 64, ffn 14336 -> 224 (3.5 h),
# 32 heads / 8 query groups / kv-channels 128 -> 8 heads / 2 groups / kv-channels 8, seq 8192 -> 64.
# Left out: --use-mcore-models (always megatron-core here), --attention-backend fused (a kernel choice; ours
# defaults to auto), --init-method-std 0.0134 (the megatron scheme's sigma: DSLM sets every sigma itself and the
# scheme registry refuses a knob the scheme does not read).
MODEL_ARGS=(
  --num-layers 8
  --hidden-size 64
  --ffn-hidden-size 224
  --num-attention-heads 8
  --group-query-attention
  --num-query-groups 2
  --kv-channels 8
  --seq-length 64
  --max-position-embeddings 64
  --position-embedding-type rope
  --rotary-base 1000000
  --rotary-percent 1.0
  --attention-dropout 0.0
  --hidden-dropout 0.0
  --swiglu
  --normalization RMSNorm
  --apply-layernorm-1p
  --untie-embeddings-and-output-weights
  --disable-bias-linear
  --init-scheme dslm
)
if [ -n "${DATA:-}" ]; then
  : "${VOCAB:?set VOCAB (a WordPiece vocab.txt) with DATA}"
  DATA_ARGS=(--data-path "$DATA" --split 98,2,0 --tokenizer-type BertWordPieceLowerCase --vocab-file "$VOCAB")
else
  DATA_ARGS=(--mock-data --tokenizer-type NullTokenizer --vocab-size 1023)
fi
torchrun --standalone --nproc_per_node "$NPROC" pretrain_gpt.py "${MODEL_ARGS[@]}" "${DATA_ARGS[@]}" \
  --micro-batch-size 4 --global-batch-size $((4 * NPROC)) --train-iters "$ITERS" \
  --lr 3e-3 --min-lr 3e-4 --lr-decay-style cosine --lr-warmup-fraction 0.1 --clip-grad 1.0 --weight-decay 0.1 \
  --adam-beta1 0.9 --adam-beta2 0.95 --log-interval 10 --eval-interval 1000 --eval-iters 0 \
  --save "$OUT/checkpoints" --save-interval "$ITERS" --tensorboard-dir "$OUT/tensorboard" "$@"
