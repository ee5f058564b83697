"""The worker pool (streams.ops.worker_pool) with real child processes: a pool runs in a process of
its own (signals go to it as an operator's would), its children are small Python programs that
behave like a worker: exit 0 on SIGTERM, or die, or exit 2 at start."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# A child that writes its pid to a file named by its index, then waits for SIGTERM and exits 0.
# With a file "<dir>/die-<i>" present it exits 1 at once; with "<dir>/usage-<i>" it exits 2.
CHILD = textwrap.dedent("""
    import os, signal, sys, time
    d, i = sys.argv[1], sys.argv[2]
    if os.path.exists(os.path.join(d, f"usage-{i}")):
        sys.exit(2)
    if os.path.exists(os.path.join(d, f"die-{i}")):
        sys.exit(1)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with open(os.path.join(d, f"pid-{i}-{os.getpid()}"), "w"):
        pass
    while True:
        time.sleep(0.05)
""")

POOL = textwrap.dedent("""
    import logging, sys
    from streams.ops.worker_pool import WorkerPool
    logging.basicConfig(level="INFO", format="%(message)s")
    d, n = sys.argv[1], int(sys.argv[2])
    child = [sys.executable, "-c", {child!r}, d]
    pool = WorkerPool(lambda i: child + [str(i)], n, stop_timeout=5, stable_s=2.0, max_quick_failures=3,
                      backoff_base_s=0.1, poll_s=0.05)
    sys.exit(pool.run())
""").format(child=CHILD)


def _start_pool(tmp: Path, n: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", POOL, str(tmp), str(n)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)},
                            start_new_session=True)


def _pids(tmp: Path, index: int) -> list[int]:
    return sorted(int(m.group(1)) for p in tmp.iterdir() if (m := re.fullmatch(rf"pid-{index}-(\d+)", p.name)))


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by the pool) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_every_process_starts_one_that_dies_is_started_again_and_sigterm_stops_all(tmp_path: Path) -> None:
    pool = _start_pool(tmp_path, 2)
    try:
        _wait(lambda: _pids(tmp_path, 0) and _pids(tmp_path, 1), 20, "both processes started")
        first = _pids(tmp_path, 1)[0]
        os.kill(first, signal.SIGKILL)  # an operator's kill -9, or the OOM killer
        _wait(lambda: len(_pids(tmp_path, 1)) == 2, 20, "the dead process started again")
        survivors = [_pids(tmp_path, 0)[0], max(_pids(tmp_path, 1))]
        assert all(_alive(p) for p in survivors)
        pool.send_signal(signal.SIGTERM)
        out, _ = pool.communicate(timeout=20)
    finally:
        if pool.poll() is None:
            os.killpg(pool.pid, signal.SIGKILL)
    text = out.decode()
    assert pool.returncode == 0, text
    assert "worker process 1 exited with status -9: starting it again" in text
    _wait(lambda: not any(_alive(p) for p in survivors), 5, "every process stopped with the pool")


def test_a_usage_error_of_one_process_stops_the_pool_with_status_2(tmp_path: Path) -> None:
    (tmp_path / "usage-1").touch()
    pool = _start_pool(tmp_path, 2)
    out, _ = pool.communicate(timeout=30)
    assert pool.returncode == 2, out.decode()
    assert "exited with status 2 (a usage or configuration error)" in out.decode()
    pids = _pids(tmp_path, 0)
    assert pids and not any(_alive(p) for p in pids), "the healthy process was stopped too"


def test_a_process_that_keeps_dying_at_start_stops_the_pool_with_status_1(tmp_path: Path) -> None:
    (tmp_path / "die-0").touch()
    started = time.monotonic()
    pool = _start_pool(tmp_path, 2)
    out, _ = pool.communicate(timeout=30)
    text = out.decode()
    assert pool.returncode == 1, text
    assert "worker process 0 died 3 times in a row" in text
    assert text.count("worker process 0 exited with status 1: starting it again") == 2  # back-off 0.1, 0.2 s
    assert time.monotonic() - started < 20
    assert not any(_alive(p) for p in _pids(tmp_path, 1))
