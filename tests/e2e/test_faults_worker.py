"""Worker faults under load, reconciled: SIGKILL at random moments, rebalances, a paused worker.

Each test runs a steady load (tests/reconcile.py), injects its faults, stops the
load, waits until the pipeline has caught up and reconciles every acknowledged
raw event against the tenant topics, the store and the DLQ. On failure the
assertion prints the reconciliation counts.
"""

from __future__ import annotations

import random
import time

import pytest

from tests.reconcile import Load, reconcile, wait_processed

pytestmark = [pytest.mark.e2e, pytest.mark.faults]


def test_sigkill_at_random_moments_loses_nothing(make_settings, start_worker):
    s = make_settings(session_timeout=6.0)
    load = Load(s, sorted(s.tenants), rate=200)
    worker = start_worker(s)
    load.start()
    rng = random.Random()
    kills = 0
    for _ in range(3):
        time.sleep(rng.uniform(1.5, 4.0))
        worker.kill()  # SIGKILL to the whole process group: no commit, no flush, no goodbye
        kills += 1
        worker = start_worker(s)
    time.sleep(2.0)
    load.stop()
    wait_processed(s, load.acked)
    rep = reconcile(s, load.acked)
    print(rep)
    assert rep.ok, str(rep)
    assert kills == 3 and rep.acked_valid > 300 and rep.acked_bad > 10, str(rep)
