#!/usr/bin/env bash
# The whole test suite on the real broker and Redis (the fixtures start them when none runs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source deploy/setup.sh
exec python3 -m pytest "$@"
