"""The README's main job, `streams demo`, as a newcomer runs it: twice, with nothing left behind and no PII in logs or the DLQ."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from streams.ingest import samples
from streams.settings import REPO_ROOT
from tests.stack import _PORT_OFFSET
from tests.kafka_read import read_topic

pytestmark = pytest.mark.e2e

# The raw values the demo publishes (streams/ingest/samples.py): every email and phone, every full
# name and recipient name the generator can pick, its street addresses, its support message bodies
# and the bad records' canary.
PII_PATTERNS = [
    re.compile(rb"[A-Za-z0-9._%+-]+@example\.(com|org)"), re.compile(rb"\+49 30 \d{7}"),
    re.compile(b"(" + b"|".join(f.encode() for f in samples._FIRST) + b") (" + b"|".join(l.encode() for l in samples._LAST) + b")"),
    re.compile(rb"\d+ Sample Street"), re.compile(b"LS1 4AP"), re.compile(b"bad\\.actor"),
    *[re.compile(re.escape(text.encode())) for text in samples._TEXTS],
]
# The demo's own stack, shifted like the test stacks so two checkouts can run this at once.
KAFKA_PORT, REDIS_PORT, WEB_PORT = 29092 + _PORT_OFFSET, 26379 + _PORT_OFFSET, 26066 + _PORT_OFFSET


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _pids_of(stack_dir: Path, exclude: int | None = None) -> list[int]:
    """Live processes started for this stack dir: they inherit STREAMS_STACK_DIR from the demo."""
    marker = f"STREAMS_STACK_DIR={stack_dir}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in (os.getpid(), exclude):
            continue
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0") and \
                    (proc / "stat").read_text().split(")")[-1].split()[0] != "Z":
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.mark.timeout(720)  # two demo runs of at most 300 s each and a 90 s read, plus a margin
def test_demo_runs_twice_leaves_nothing_running_and_logs_no_pii(tmp_path):
    stack_dir = tmp_path / "stack"
    env = dict(os.environ, STREAMS_STACK_DIR=str(stack_dir), STREAMS_KAFKA_BOOTSTRAP=f"127.0.0.1:{KAFKA_PORT}",
               STREAMS_REDIS_URL=f"redis://127.0.0.1:{REDIS_PORT}/0", STREAMS_WEB_PORT=str(WEB_PORT))
    outputs = []
    for run in range(2):
        r = subprocess.run([sys.executable, "-m", "streams.cli.main", "demo", "--events", "5"], env=env,
                           capture_output=True, timeout=300, cwd=REPO_ROOT)
        outputs.append(r.stdout.decode())
        assert r.returncode == 0, f"run {run}: {r.stdout.decode()[-3000:]}\n{r.stderr.decode()[-3000:]}"
        out = r.stdout.decode()
        # 5 events per tenant plus one signup for each of the 4 demo subjects
        assert "tenant.acme.events: 9 events" in out and "tenant.globex.events: 9 events" in out
        assert "(the original email, audited)" in out and "store now answers 0 events" in out
        assert "steps: state+" in out and "audit trail OK" in out
        for reason in ("undecodable", "unknown_schema", "schema_violation", "missing_tenant",
                       "unknown_tenant", "oversized", "key_mismatch"):
            assert reason in out, reason
        # Reconciliation: the demo's delivered count is what it read back from the tenant topics.
        m = re.search(r"published (\d+) = delivered (\d+) \+ DLQ (\d+)  (\S+)", out.split("Reconciliation")[-1])
        assert m, out[-2000:]
        assert (int(m[1]), int(m[2]), int(m[3]), m[4]) == (2 * 9 + 9, 2 * 9, 9, "OK"), m.group(0)
        assert "nothing left running" in out
        assert _pids_of(stack_dir) == [], "stray processes after the demo"
        assert not _port_open(KAFKA_PORT) and not _port_open(REDIS_PORT), "broker or Redis still listening"

    # Every log file the demo produced: worker, broker, Redis.
    # (Kafka's segment files are also *.log: the raw topic holds PII by design; skip the data dir.)
    data_dir = stack_dir / "kafka" / "data"
    logs = [p for p in stack_dir.rglob("*.log") if p.is_file() and data_dir not in p.parents]
    assert any(p.name == "worker.log" for p in logs) and any(p.name == "server.log" for p in logs)
    for p in logs:
        data = p.read_bytes()
        for pat in PII_PATTERNS:
            assert not pat.search(data), f"PII in {p}"

    # The DLQ records of both runs (restart the stack briefly to read them).
    from streams.devstack.stack import LocalStack
    from streams.settings import Settings

    s = Settings.from_env(env)
    stack = LocalStack(s)
    stack.up()
    try:
        dlq = read_topic(s.kafka_bootstrap, s.dlq_topic, expect=2 * 9, timeout=90)
    finally:
        stack.down()
    assert len(dlq) == 2 * 9
    for m in dlq:
        for pat in PII_PATTERNS:
            assert not pat.search(m.value())
        assert "Canary" not in m.value().decode()
        json.loads(m.value())


@pytest.mark.timeout(600)  # start of at most 240 s, stop of at most 200 s, clean-up, plus a margin
def test_ctrl_c_stops_everything(tmp_path):
    import signal
    import time

    stack_dir = tmp_path / "stack"
    env = dict(os.environ, STREAMS_STACK_DIR=str(stack_dir), STREAMS_KAFKA_BOOTSTRAP=f"127.0.0.1:{KAFKA_PORT}",
               STREAMS_REDIS_URL=f"redis://127.0.0.1:{REDIS_PORT}/0", STREAMS_WEB_PORT=str(WEB_PORT), PYTHONUNBUFFERED="1")
    log = tmp_path / "demo.out"
    with open(log, "wb") as out:
        # Started with SIGINT ignored, as a shell without job control starts a background job (and
        # as this suite runs when CI starts it so): Ctrl-C must still stop everything.
        demo = subprocess.Popen([sys.executable, "-m", "streams.cli.main", "demo", "--events", "3", "--keep-running"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        deadline = time.monotonic() + 240
        while "keep running" not in log.read_text():
            assert demo.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        assert len(_pids_of(stack_dir, exclude=demo.pid)) >= 2  # kafka, worker (redis rewrites its environ)
        assert _port_open(KAFKA_PORT) and _port_open(REDIS_PORT)
        demo.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends
        # Bounded by the stop timeouts (worker 30 s, Kafka 30 s, Redis 20 s, each then killed) plus
        # a margin for a loaded machine; the log says which step took how long.
        try:
            assert demo.wait(200) == 130, log.read_text()[-3000:]
        except subprocess.TimeoutExpired:
            raise AssertionError("the demo did not stop within 200 s of Ctrl-C:\n" + log.read_text()[-3000:]) from None
    finally:
        if demo.poll() is None:
            demo.terminate()  # the demo stops its worker and stack on SIGTERM too
            demo.wait(120)
        from streams.devstack.stack import LocalStack
        from streams.settings import Settings

        LocalStack(Settings.from_env(env)).down()  # last resort: never leave a broker behind
    assert "nothing left running" in log.read_text()
    assert _pids_of(stack_dir) == []
    assert not _port_open(KAFKA_PORT) and not _port_open(REDIS_PORT)
