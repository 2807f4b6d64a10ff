#!/usr/bin/env bash
# The paper's deep shape: 192 layers x 1024 hidden, DSLM init + lambda/beta residual scaling (beta^2 = 1/192),
# Pre-LN by default (add --apply-residual-connection-post-layernorm for Post-LN). 8 GPUs: PP=4 x DP=2.
#   DATA=... VOCAB=... MERGES=... bash examples/pretrain_gpt_192l_dslm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DATA:?set DATA}" "${VOCAB:?set VOCAB}" "${MERGES:?set MERGES}"
OUT=${OUT:-runs/gpt_192l_1024_dslm}
torchrun --nproc_per_node "${GPUS:-8}" pretrain_gpt.py \
  --pipeline-model-parallel-size 4 --use-distributed-optimizer \
  --num-layers 192 --hidden-size 1024 --num-attention-heads 16 --seq-length 512 --max-position-embeddings 512 \
  --micro-batch-size 4 --global-batch-size 256 --train-iters 100000 \
  --lr 1e-4 --min-lr 1e-5 --lr-decay-style cosine --lr-warmup-fraction 0.01 --clip-grad 1.0 --bf16 \
  --hidden-dropout 0.1 --attention-dropout 0.1 --init-scheme dslm --dslm-k 1 \
  --data-path "$DATA" --tokenizer-type GPT2BPETokenizer --vocab-file "$VOCAB" --merge-file "$MERGES" \
  --log-interval 50 --eval-interval 1000 --eval-iters 10 --log-moments-interval 1000 \
  --save "$OUT/checkpoints" --load "$OUT/checkpoints" --save-interval 2000 --tensorboard-dir "$OUT/tensorboard" "$@"
