#!/usr/bin/env bash
# The whole test suite on the real broker and Redis (the fixtures start them when none runs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
STREAMS_SETUP_TEST_TOOLS=1 source deploy/setup.sh
# Two processes (pytest-xdist), each with stacks of its own (tests/stack.py): most of an end-to-end
# test's time is waiting on the broker and the workers, so two halve the wall time even on two
# cores. STREAMS_TEST_PROCESSES=0 runs everything in this process (what a debugger wants).
procs="${STREAMS_TEST_PROCESSES:-2}"
if [ "$procs" = "0" ]; then
  exec python3 -m pytest "$@"
fi
exec python3 -m pytest -n "$procs" --dist loadgroup "$@"
