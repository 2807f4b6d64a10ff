#!/usr/bin/env bash
# The test command (README, CI): installs what it needs, then runs pytest.
#   bash tests/run.sh            # default suite (~15 min on 2 cores)
#   RUN_SLOW=1 bash tests/run.sh # also the slow end-to-end runs (CI=true does this too)
# Extra arguments go to pytest, e.g. `bash tests/run.sh tests/dslm -k weight_init`.
# Tests run in PYTEST_WORKERS (default 2) processes: most tests drive one-thread subprocesses, so one worker
# per core roughly halves the wall time; PYTEST_WORKERS=0 runs them in this process.
set -euo pipefail
cd "$(dirname "$0")/.."
# DSLM_SKIP_INSTALL=1: use `python` as it is (scripts/check_engine_versions.sh sets it for the environments it built).
if [ "${DSLM_SKIP_INSTALL:-0}" != "1" ]; then
  if ! python -c "import torch" 2>/dev/null; then
    # CPU build from local disk; a bare `torch` requirement would pull a multi-GB CUDA build.
    if command -v nvidia-smi >/dev/null 2>&1; then python -m pip install -q torch; else python -m pip install -q torch==2.13.0; fi
  fi
  python -m pip install -q -e ".[test]"
fi
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
markers=(-m "not slow")
if [ "${CI:-}" = "true" ] || [ "${RUN_SLOW:-0}" = "1" ]; then markers=(); fi
workers=(-n "${PYTEST_WORKERS:-2}" --dist loadgroup --no-loadscope-reorder)
if [ "${PYTEST_WORKERS:-2}" = "0" ]; then workers=(); fi
# One OpenMP thread per process: two workers each spinning two threads on two cores thrash.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
set +e
python -m pytest -p no:cacheprovider --durations=30 "${workers[@]}" "${markers[@]}" "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then echo "pytest collected no tests"; exit 1; fi
exit "$rc"
