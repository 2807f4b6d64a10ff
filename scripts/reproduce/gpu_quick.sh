#!/usr/bin/env bash
# Depth vs width on one GPU in about ten minutes: GPT 4x768, 16x384, 64x192 (12·L·H² = 28.3 M non-embedding
# parameters each), DSLM Pre-LN, bf16, seq 512, 800 steps of 256 sequences (105 M tokens per shape), the 8k
# WordPiece vocabulary and split of scripts/reproduce/depth_vs_width.py; prints one table.
#   bash scripts/reproduce/gpu_quick.sh [--out DIR]        # one GPU
#   bash scripts/reproduce/gpu_quick.sh --cpu [--out DIR]  # the same pipeline at tiny shapes on CPU (smoke check)
# Knobs (environment): LR (default 1e-3), STEPS, GBS, MBS, SEQ; DATA_PREFIX and VOCAB to use other indexed data
# (the sample corpus holds ~4 M tokens, so 105 M tokens are ~25 epochs of it: a larger corpus is better).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-python}"
CPU=0
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) CPU=1; shift ;;
    --out) [ $# -ge 2 ] || { echo "error: --out needs a folder" >&2; exit 2; }; OUT="$2"; shift 2 ;;
    -h|--help) sed -n 2,8p "$0"; exit 0 ;;
    *) echo "error: unknown argument $1 (takes --cpu, --out DIR)" >&2; exit 2 ;;
  esac
done
cd "$REPO"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONWARNINGS=ignore HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
if [ "$CPU" = 1 ]; then
  OUT="${OUT:-runs/gpu_quick_cpu}"
  SHAPES="2x32:2 8x16:2 32x8:2"; STEPS="${STEPS:-6}"; GBS="${GBS:-4}"; MBS="${MBS:-4}"; SEQ="${SEQ:-32}"
  PREC=(); TINY=(--tiny); export OMP_NUM_THREADS=1
else
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "error: no CUDA device visible to torch (use --cpu for the CPU smoke check)" >&2; exit 2
  fi
  OUT="${OUT:-runs/gpu_quick}"
  SHAPES="4x768:12 16x384:6 64x192:3"; STEPS="${STEPS:-800}"; GBS="${GBS:-256}"; MBS="${MBS:-32}"; SEQ="${SEQ:-512}"
  PREC=(--bf16); TINY=()
fi
LR="${LR:-1e-3}"
mkdir -p "$OUT"
rm -f "$OUT/walls.txt.tmp"
if [ -z "${DATA_PREFIX:-}" ]; then
  prep="$("$PY" scripts/reproduce/depth_vs_width.py "${TINY[@]}" --prepare-only --work "$OUT/work" | tail -2)"
  DATA_PREFIX="$(echo "$prep" | sed -n 's/^model data: //p')"
  VOCAB="$(echo "$prep" | sed -n 's/^vocab: //p')"
fi
[ -n "${VOCAB:-}" ] || { echo "error: DATA_PREFIX given without VOCAB" >&2; exit 2; }
for spec in $SHAPES; do
  shape="${spec%%:*}"; heads="${spec##*:}"; layers="${shape%%x*}"; hidden="${shape##*x}"
  metrics="$OUT/$shape.metrics.jsonl"
  rm -f "$metrics"
  start=$(date +%s.%N)
  "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 pretrain_gpt.py \
    --num-layers "$layers" --hidden-size "$hidden" --num-attention-heads "$heads" \
    --seq-length "$SEQ" --max-position-embeddings "$SEQ" --init-scheme dslm "${PREC[@]}" \
    --micro-batch-size "$MBS" --global-batch-size "$GBS" --train-iters "$STEPS" \
    --lr "$LR" --min-lr "$("$PY" -c "print($LR / 10)")" --lr-decay-style cosine --lr-warmup-fraction 0.05 \
    --weight-decay 0.01 --clip-grad 1.0 --data-path "$DATA_PREFIX" --split 95,5,0 \
    --tokenizer-type BertWordPieceLowerCase --vocab-file "$VOCAB" --log-interval $(( STEPS / 10 > 0 ? STEPS / 10 : 1 )) \
    --eval-interval "$STEPS" --eval-iters 8 --data-cache-path "$OUT/cache" --seed 1234 \
    --metrics-file "$metrics" > "$OUT/$shape.log" 2>&1 || { echo "error: $shape failed; see $OUT/$shape.log" >&2; tail -5 "$OUT/$shape.log" >&2; exit 1; }
  echo "$shape $("$PY" -c "import sys; print(round($(date +%s.%N) - $start, 1))")" >> "$OUT/walls.txt.tmp"
done
mv "$OUT/walls.txt.tmp" "$OUT/walls.txt"
"$PY" - "$OUT" "$SHAPES" "$STEPS" "$GBS" "$SEQ" <<'PYEOF'
import json, math, sys
from megatron.training.metrics import read_metrics
out, shapes, steps, gbs, seq = sys.argv[1], sys.argv[2].split(), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
walls = dict(line.split() for line in open(f"{out}/walls.txt"))
rows = []
print(f"| shape | non-emb params | tokens | train tokens/s | wall s | val loss | val ppl |\n|---|---|---|---|---|---|---|")
for spec in shapes:
    shape = spec.split(":")[0]
    layers, hidden = (int(v) for v in shape.split("x"))
    train = read_metrics(f"{out}/{shape}.metrics.jsonl", split="train")
    valid = read_metrics(f"{out}/{shape}.metrics.jsonl", split="validation")
    loss = valid[-1].get("lm loss") if valid else None
    tps = train[-1].get("tokens_per_s") if train else None
    row = {"shape": shape, "non_embedding_params": 12 * layers * hidden ** 2, "train_tokens": steps * gbs * seq,
           "tokens_per_s": tps, "wall_s": round(float(walls[shape]), 1), "val_loss": loss,
           "val_ppl": round(math.exp(loss), 2) if loss is not None else None}
    rows.append(row)
    print("| " + " | ".join(str(row[k]) for k in ("shape", "non_embedding_params", "train_tokens", "tokens_per_s",
                                                 "wall_s", "val_loss", "val_ppl")) + " |")
with open(f"{out}/gpu_quick.json.tmp", "w") as fh:
    json.dump(rows, fh, indent=1)
import os
os.replace(f"{out}/gpu_quick.json.tmp", f"{out}/gpu_quick.json")
print(f"wrote {out}/gpu_quick.json")
PYEOF
