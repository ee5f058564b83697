#!/usr/bin/env bash
# The main job: set up, start Kafka + Redis + a worker, run the demo. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source deploy/setup.sh
exec python3 -m streams.cli.main demo "$@"
