#!/usr/bin/env bash
# Runs the unit suite N times (default 20), each in its own random order, to find order
# dependence and flaky tests. Not part of CI (about 20 s a run); run it after changing tests:
#
#   bash tests/repeat_unit.sh [N] [extra pytest args...]
#
# Each run uses a fresh seed (printed; `python3 -m pytest tests/unit --randomly-seed=SEED`
# replays that order). Prints one line per run and a summary; exits 1 if any run failed, and
# keeps the failed runs' output under ${REPEAT_LOG_DIR:-/tmp/streams-repeat-unit}.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
n="${1:-20}"
shift || true
logs="${REPEAT_LOG_DIR:-/tmp/streams-repeat-unit}"
mkdir -p "$logs"
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
failed=()
for i in $(seq 1 "$n"); do
  seed="$(python3 -c 'import secrets; print(secrets.randbelow(2**32))')"
  log="$logs/run-$i-seed-$seed.log"
  start=$(date +%s)
  python3 -m pytest tests/unit -p no:cacheprovider -q -p randomly --randomly-seed="$seed" "$@" >"$log" 2>&1
  rc=$?
  summary="$(tail -n 1 "$log")"
  echo "run $i/$n seed $seed rc $rc ($(( $(date +%s) - start )) s): $summary"
  if [ "$rc" -eq 0 ]; then rm -f "$log"; else failed+=("$seed"); fi
done
if ((${#failed[@]})); then
  echo "FAILED with seeds: ${failed[*]} (logs in $logs)"
  exit 1
fi
echo "all $n runs passed"
