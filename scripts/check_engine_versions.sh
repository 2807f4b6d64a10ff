#!/usr/bin/env bash
# Runs the test suite once per supported megatron-core release and prints the pass counts side by side.
#   bash scripts/check_engine_versions.sh                          # the default suite (tests/run.sh) on each
#   bash scripts/check_engine_versions.sh tests/dslm/test_specs.py # extra arguments go to pytest, as in run.sh
# Each release runs in its own environment (docs/compatibility.md):
#   0.16.1  Python 3.11, CPU build of torch 2.13.0
#   0.19.2  Python 3.12 (0.17+ require it); torch 2.13.0 from PyPI there, a CUDA build of about 5 GB
# ENGINE_ENVS overrides the list: "VERSION=PLACE ..." where PLACE is an interpreter that already has that
# release and this project installed (used as it is, nothing is installed into it) or a venv folder (built on
# first use with ENGINE_PYTHON_<major>_<minor> or python3.11 / python3.12, then reused). The default places
# are .venvs/mcore-VERSION in the repository (ignored by git). RUN_SLOW, CI, PYTEST_WORKERS and
# OMP_NUM_THREADS mean what they mean to tests/run.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
envs=${ENGINE_ENVS:-"0.16.1=$root/.venvs/mcore-0.16.1 0.19.2=$root/.venvs/mcore-0.19.2"}

interpreter_for() {  # the Python a release needs: 0.16 runs on 3.10/3.11, 0.17 and later need 3.12
  local minor=${1#0.}; minor=${minor%%.*}
  if [ "$minor" -ge 17 ]; then echo "${ENGINE_PYTHON_3_12:-python3.12}"; else echo "${ENGINE_PYTHON_3_11:-python3.11}"; fi
}

build_env() {  # build_env VERSION FOLDER: a venv with torch, that megatron-core release and this project
  local version=$1 folder=$2 base
  base=$(interpreter_for "$version")
  echo "== building $folder (megatron-core $version, $("$base" --version 2>&1))"
  "$base" -m venv "$folder" || return 1
  "$folder/bin/python" -m pip install -q torch==2.13.0 || return 1
  "$folder/bin/python" -m pip install -q "megatron-core==$version" || return 1
  "$folder/bin/python" -m pip install -q -e "$root[test]" || return 1
}

summary=()
status=0
for entry in $envs; do
  version=${entry%%=*}
  place=${entry#*=}
  if [ -f "$place" ] && [ -x "$place" ]; then
    python_bin=$place
  else
    if [ ! -x "$place/bin/python" ]; then build_env "$version" "$place" || { summary+=("$version: environment build failed"); status=1; continue; }; fi
    python_bin=$place/bin/python
  fi
  found=$("$python_bin" -c "from importlib.metadata import version; print(version('megatron-core'))" 2>/dev/null)
  if [ "$found" != "$version" ]; then
    summary+=("$version: $python_bin has megatron-core '${found:-none}'"); status=1; continue
  fi
  log=$(mktemp "${TMPDIR:-/tmp}/engine-$version.XXXXXX.log")
  echo "== megatron-core $version ($("$python_bin" --version 2>&1), $python_bin); log: $log"
  # tests/run.sh runs `python`: put this environment's first on PATH; it is installed already.
  PATH="$(dirname "$python_bin"):$PATH" DSLM_SKIP_INSTALL=1 bash tests/run.sh "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  counts=$(grep -E "(passed|failed|error|skipped|deselected).* in [0-9.]+s" "$log" | tail -1 | sed -E 's/^=+ //; s/ =+$//')
  summary+=("$version: ${counts:-no pytest summary line} (exit $rc)")
  [ "$rc" = 0 ] || status=1
done
echo
echo "== pass counts per megatron-core release"
for line in "${summary[@]}"; do echo "  $line"; done
exit "$status"
