"""The broker and Redis fail under load; the workers hold back, reconnect by themselves, and the
reconciliation holds (every acknowledged raw event delivered or in the DLQ, nothing extra).

These drive the project's local stack (its broker and Redis are processes of this machine the
test can kill and start); they restart what they stopped before they return.
"""

from __future__ import annotations

import os
import re
import signal
import time

import pytest

from streams.devstack.stack import LocalStack
from tests.reconcile import Load, settle

# Each test: about 20 s of load and faults, a restart, then the settle step (bounded by its stall limit).
pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.timeout(420)]

# What ops/retry.py logs when a step that needs Redis holds back: the step, then Redis' error
# (raw, or wrapped by the store writer as "Redis write failed: <error>").
REDIS_HELD_BACK = re.compile(
    r"\b(consent|keys|store|stats|privacy requests|audit) unavailable "
    r"\((?:ConnectionError|TimeoutError|BusyLoadingError|SinkUnavailable: Redis write failed: \w+)\b.*\); retrying in")


def _local(stack) -> LocalStack:
    if stack.local is None:
        pytest.skip(f"needs the local stack's processes to kill (stack kind: {stack.kind})")
    return LocalStack(stack.local)


def test_broker_killed_and_restarted_during_load(stack, make_settings, start_worker):
    local = _local(stack)
    s = make_settings(session_timeout=6.0)
    load = Load(s, sorted(s.tenants), rate=150)
    worker = start_worker(s)
    load.start()
    time.sleep(3.0)
    pid = int(local.kafka.pidfile.read_text().strip())
    try:
        os.kill(pid, signal.SIGKILL)  # no controlled shutdown: clients see connections drop
        deadline = time.monotonic() + 20
        while local.kafka.running() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(5.0)  # down for a while, the load keeps producing (it retries)
    finally:
        local.kafka.start()
    time.sleep(8.0)
    rep = settle(s, load)
    assert worker.proc.poll() is None, "the worker died with the broker:\n" + worker.log_text()[-3000:]
    assert rep.ok, str(rep)
    assert rep.acked_valid > 200, str(rep)


def test_redis_stopped_for_a_while_during_load(stack, make_settings, start_worker):
    local = _local(stack)
    s = make_settings(session_timeout=6.0)
    load = Load(s, sorted(s.tenants), rate=150)
    worker = start_worker(s)
    load.start()
    time.sleep(3.0)
    try:
        local.redis.stop()  # SIGTERM: Redis writes its AOF and exits
        time.sleep(6.0)
    finally:
        local.redis.start()
    time.sleep(6.0)
    rep = settle(s, load)
    assert worker.proc.poll() is None, "the worker died with Redis:\n" + worker.log_text()[-3000:]
    held = REDIS_HELD_BACK.findall(worker.log_text())
    assert held, "the worker never logged a step held back by Redis:\n" + worker.log_text()[-3000:]
    assert rep.ok, str(rep)
