#!/usr/bin/env bash
# One-GPU acceptance run (about 8 minutes): pass/fail table of pretraining, finetuning, resume, moment
# logging and speed rows; exit status 1 if any row fails. --cpu runs the same checks at tiny shapes.
#   bash scripts/gpu_acceptance.sh [--cpu] [--out DIR] [--peak-tflops T] ...   (--help for all flags)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python}"
if ! "$PY" -c "import megatron.core, megatron.training" >/dev/null 2>&1; then
  echo "error: megatron-core or this project is not importable by $PY: run 'pip install -e $REPO' first" >&2
  exit 2
fi
cd "$REPO"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONWARNINGS=ignore HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
exec "$PY" scripts/gpu_acceptance.py "$@"
