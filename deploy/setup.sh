#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian/Ubuntu machine, idempotently:
# Java 17+, Maven and redis-server (apt-get, when missing), the Python package
# with its test extras, and Kafka's jars (Maven, cached in ~/.cache/streams).
# Sourced by deploy/demo.sh and deploy/test.sh; safe to run again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

need_apt=()
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# The test command also checks the Prometheus alert rules with promtool (Debian's prometheus package).
if [ "${STREAMS_SETUP_TEST_TOOLS:-0}" = "1" ]; then
  command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
fi
if ((${#need_apt[@]})); then
  echo "setup: installing ${need_apt[*]} with apt-get" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# Debian starts a system redis-server on 6379 when the package is installed
# with an init system; the project runs its own (AOF on, own port and dir).
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
  systemctl stop redis-server || true
fi
# Nor is a system Prometheus wanted (only its promtool).
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl stop prometheus || true
fi

PY="${PYTHON:-python3}"
# Install when a dependency is missing, or when `streams` resolves to another checkout.
here="$(pwd -P)"
installed="$(cd / && "$PY" -c "import streams, os; print(os.path.dirname(os.path.dirname(os.path.realpath(streams.__file__))))" 2>/dev/null || true)"
if [ "$installed" != "$here" ] \
   || ! "$PY" -c "import faust, confluent_kafka, fastavro, redis, cramjam, prometheus_client, pytest, hypothesis, yaml, pytest_timeout, pytest_randomly, xdist, schemathesis" >/dev/null 2>&1 \
   || ! command -v streams >/dev/null 2>&1; then
  echo "setup: installing the Python package and its dependencies" >&2
  "$PY" -m pip install -q --disable-pip-version-check -e '.[test]'
fi
"$PY" -c "from streams.devstack.stack import ensure_kafka_jars; from streams.settings import Settings; s = Settings.from_env(); ensure_kafka_jars(s.kafka_version, s.jar_cache)"
