"""``streams worker --processes 2`` as an operator runs it: two members of the consumer group on one
machine, each answering on its own web port; one killed under load is started again and nothing is
lost; SIGTERM to the pool stops both cleanly (the fixture checks status 0 and no traceback)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
import urllib.request

import pytest

from tests.kafka_groups import wait_group
from tests.reconcile import Load, settle

pytestmark = pytest.mark.e2e


def _two_free_ports() -> int:
    """A port p with p and p + 1 free (the pool's processes take web_port + i)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise AssertionError("no two consecutive free ports")


def _live(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/live", timeout=10) as r:
        assert r.status == 200
        return json.load(r)


def _pid_of(worker, index: int, after: int = 0) -> tuple[int, int]:
    """The pid of pool process ``index`` from the pool's log (its start line past ``after``)."""
    m = None
    deadline = time.monotonic() + 60
    while m is None:
        m = re.compile(rf"worker process {index} started \(pid (\d+)\)").search(worker.log_text(), after)
        assert m or time.monotonic() < deadline, worker.log_text()[-3000:]
        time.sleep(0.2)
    return int(m.group(1)), m.end()


def test_two_processes_share_the_group_and_one_killed_under_load_is_restarted_losing_nothing(
        make_settings, start_worker):
    s = make_settings(web_enabled=True, web_port=_two_free_ports())
    pool = start_worker(s, extra_env={"STREAMS_WORKER_PROCESSES": "2"})
    group = wait_group(s.kafka(), s.app_id, lambda g: g.state == "STABLE" and len(g.members) == 2, 90,
                       "both processes in the group")
    for port in (s.web_port, s.web_port + 1):  # each process on its own port
        _live(port)
    first, pos = _pid_of(pool, 1)
    assert first != pool.proc.pid

    load = Load(s, sorted(s.tenants), rate=150)
    load.start()
    time.sleep(3.0)
    os.kill(first, signal.SIGKILL)  # the OOM killer, say
    again, _ = _pid_of(pool, 1, pos)
    assert again != first
    assert "worker process 1 exited with status -9: starting it again" in pool.log_text()
    # The killed member stays until its session times out; then the new one joins.
    wait_group(s.kafka(), s.app_id, lambda g: g.state == "STABLE" and len(g.members) == 2
               and len(g.members & group.members) == 1, 90, "the killed member replaced by the restarted process")
    _live(s.web_port + 1)
    time.sleep(2.0)
    rep = settle(s, load)
    assert rep.ok, str(rep)
