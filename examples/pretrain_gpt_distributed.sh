#!/usr/bin/env bash
# GPT pretraining on one 8-GPU node: TP=2 x PP=2 x DP=2, bf16, upstream Megatron flags.
#   DATA=/data/my-corpus_text_document VOCAB=gpt2-vocab.json MERGES=gpt2-merges.txt bash examples/pretrain_gpt_distributed.sh
# Extra flags are appended: e.g. `--init-scheme dslm` or `--apply-residual-connection-post-layernorm`.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DATA:?set DATA to an indexed dataset prefix (tools/preprocess_data.py)}"
: "${VOCAB:?set VOCAB}" "${MERGES:?set MERGES}"
OUT=${OUT:-runs/gpt_24l_1024}
torchrun --nproc_per_node "${GPUS:-8}" --nnodes "${NNODES:-1}" --node_rank "${NODE_RANK:-0}" \
  --master_addr "${MASTER_ADDR:-127.0.0.1}" --master_port "${MASTER_PORT:-6000}" pretrain_gpt.py \
  --tensor-model-parallel-size 2 --pipeline-model-parallel-size 2 --use-distributed-optimizer \
  --num-layers 24 --hidden-size 1024 --num-attention-heads 16 --seq-length 1024 --max-position-embeddings 1024 \
  --micro-batch-size 8 --global-batch-size 256 --train-iters 500000 \
  --lr 3e-4 --min-lr 3e-5 --lr-decay-style cosine --lr-warmup-fraction 0.01 --weight-decay 0.1 --clip-grad 1.0 \
  --adam-beta2 0.95 --bf16 --data-path "$DATA" --split 969,30,1 \
  --tokenizer-type GPT2BPETokenizer --vocab-file "$VOCAB" --merge-file "$MERGES" \
  --log-interval 100 --eval-interval 1000 --eval-iters 10 --save "$OUT/checkpoints" --load "$OUT/checkpoints" \
  --save-interval 2000 --tensorboard-dir "$OUT/tensorboard" "$@"
