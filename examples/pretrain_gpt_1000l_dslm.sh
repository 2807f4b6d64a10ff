#!/usr/bin/env bash
# 1000 layers x 128 hidden with DSLM (beta^2 = 1/1000). Deep-narrow models are launch-bound: PP=8 spreads
# 125 layers per GPU, interleaved as 5 model chunks of 25 layers (VP_LAYERS, layers per virtual stage).
# Pipeline bubble with p=8 stages, v=5 chunks and m = 64 / 4 = 16 micro-batches per step:
#   interleaved (p-1)/(v*m + p-1) = 7/87 = 8.0%   (plain 1F1B at m=16: 7/23 = 30%; the former m=8: 7/15 = 47%)
# Start-up prints the same figure. Interleaving needs m divisible by PP.
# On CPU, try it small first: NPROC=1 GPUS=1 PP=1 bash examples/pretrain_gpt_1000l_dslm.sh --cpu
#   DATA=... VOCAB=... [MERGES=... TOKENIZER=GPT2BPETokenizer] bash examples/pretrain_gpt_1000l_dslm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DATA:?set DATA}" "${VOCAB:?set VOCAB}"
TOKENIZER=${TOKENIZER:-BertWordPieceLowerCase}
OUT=${OUT:-runs/gpt_1000l_128_dslm}
MERGE_ARGS=()
if [ -n "${MERGES:-}" ]; then MERGE_ARGS=(--merge-file "$MERGES"); fi
VP_ARGS=()
if [ "${PP:-8}" -gt 1 ]; then VP_ARGS=(--num-layers-per-virtual-pipeline-stage "${VP_LAYERS:-25}"); fi
torchrun --nproc_per_node "${GPUS:-8}" pretrain_gpt.py \
  --pipeline-model-parallel-size "${PP:-8}" "${VP_ARGS[@]}" \
  --num-layers 1000 --hidden-size 128 --num-attention-heads 4 --seq-length 256 --max-position-embeddings 256 \
  --micro-batch-size 4 --global-batch-size 64 --train-iters "${ITERS:-20000}" \
  --lr 5e-4 --min-lr 5e-5 --lr-decay-style cosine --lr-warmup-fraction 0.02 --clip-grad 1.0 \
  --hidden-dropout 0.1 --attention-dropout 0.1 --init-scheme dslm \
  --data-path "$DATA" --tokenizer-type "$TOKENIZER" --vocab-file "$VOCAB" "${MERGE_ARGS[@]}" \
  --log-interval 10 --eval-interval 500 --eval-iters 5 --log-moments-interval 500 \
  --save "$OUT/checkpoints" --load "$OUT/checkpoints" --save-interval 1000 --tensorboard-dir "$OUT/tensorboard" "$@"
