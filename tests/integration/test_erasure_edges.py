"""Erasure's edge cases and failure paths on the real Redis and broker (streams/erasure/executor.py):
a subject with no events; the AOF rewrite failing, timing out, or AOF off; the audit append failing.
An erasure's receipt says ``done`` only once Redis' files were rewritten (or nothing persists) and
the audit trail has the request; otherwise it stays ``pending`` and queued, and a later call
completes it."""

from __future__ import annotations

import dataclasses

import os
import signal
import time
import uuid
from pathlib import Path

import pytest
import redis
from confluent_kafka.admin import NewTopic

from streams.audit.keys import open_audit_log
from streams.audit.log import AuditError, read_all
from streams.erasure.executor import PENDING_AOF
from streams.consent.requests import new_request
from streams.ingest.processor import EventProcessor
from streams.ops.metrics import Metrics
from streams.connections import admin_client
from streams.runtime import build_runtime
from streams.schema.registry import SchemaRegistry

pytestmark = pytest.mark.integration


def _runtime(s):
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    return build_runtime(s, registry, EventProcessor(registry, s.tenants, s.max_event_bytes), Metrics(), "test",
                         lambda: set())


def _erase_pending(rt, tenant, subject):
    req = new_request("erase", tenant, subject, "test:edges")
    receipt = rt.requests.handle(req)
    assert receipt["status"] == "pending"
    return req


def _status(rt, tenant, req) -> str:
    return rt.consent.receipt(tenant, req.request_id)["status"]


def _queued(r, tenant, req) -> bool:
    return bool(r.sismember(PENDING_AOF, f"{tenant}|{req.request_id}"))


def test_erasure_of_a_subject_with_no_events_counts_zero_and_destroys_no_key(make_settings):
    """Receipt of an erasure for a subject the pipeline never saw: 0 tombstones, 0 deleted events,
    ``destroyed: False`` (there was no key), then the AOF rewrite and the audit record, ``done``."""
    s = make_settings()
    tenant = sorted(s.tenants)[0]
    rt = _runtime(s)
    req = _erase_pending(rt, tenant, f"never-seen-{uuid.uuid4().hex[:6]}")
    assert rt.requests.finish_pending() >= 1
    done = rt.consent.receipt(tenant, req.request_id)
    assert done["status"] == "done"
    steps = {st["step"]: st for st in done["steps"]}
    assert list(steps) == ["state", "tombstone", "store", "key", "quarantine", "dlq", "aof", "audit"]
    assert steps["state"]["erased"] is True
    assert steps["tombstone"]["events"] == 0
    assert steps["store"]["deleted_events"] == 0
    assert steps["key"]["destroyed"] is False
    assert steps["aof"]["aof"] == "rewritten"
    audited = [rec for _, rec in read_all(s.kafka_bootstrap, s.audit_topic) if rec["action"] == "privacy.erase"]
    assert [rec["details"]["request_id"] for rec in audited] == [req.request_id]


def _redis_pid(r: redis.Redis) -> int:
    return int(r.info("server")["process_id"])


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def _stop_rewrite(r: redis.Redis, timeout: float = 60.0) -> None:
    """End a rewrite in progress now (SIGKILL its child: the rewrite fails, the AOF stays as it was,
    the next one starts afresh). A rewrite slowed by ``rdb-key-save-delay`` keeps the delay it was
    forked with: on the shared test Redis (tens of thousands of keys) it would run for many minutes
    and make every later rewrite of the session fail with "already in progress"."""
    deadline = time.monotonic() + timeout
    while r.info("persistence")["aof_rewrite_in_progress"] and time.monotonic() < deadline:
        for kid in _children(_redis_pid(r)):
            try:
                os.kill(kid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    assert not r.info("persistence")["aof_rewrite_in_progress"]


@pytest.fixture
def slow_rewrites(stack):
    """Redis' own test knob: every key costs ``rdb-key-save-delay`` µs in a rewrite, so a rewrite of
    a few hundred keys lasts seconds. Reset, and any slowed rewrite ended, afterwards."""
    r = redis.Redis.from_url(stack.redis_url)
    if stack.redis_dir is None or not Path(f"/proc/{_redis_pid(r)}").exists():
        pytest.skip(f"needs the Redis process on this machine ({stack.kind} stack)")
    keys = [f"edges-filler:{uuid.uuid4().hex[:8]}:{i}" for i in range(300)]
    r.mset({k: "x" for k in keys})
    _stop_rewrite(r)  # another test's rewrite must not be the one this test sees
    r.config_set("rdb-key-save-delay", "20000")  # 300 keys (and the rest of the db) x 20 ms: 6 s and more
    try:
        yield r
    finally:
        r.config_set("rdb-key-save-delay", "0")
        _stop_rewrite(r)
        r.delete(*keys)
        r.bgrewriteaof()
        deadline = time.monotonic() + 120
        while r.info("persistence")["aof_rewrite_in_progress"] and time.monotonic() < deadline:
            time.sleep(0.1)


def test_erasure_stays_pending_when_the_aof_rewrite_fails(make_settings, slow_rewrites):
    """The rewrite's child process dies (killed, as by the OOM killer): finish_pending raises, the
    receipt stays pending and queued; once rewrites work again, the next call completes it."""
    r = slow_rewrites
    s = make_settings()
    tenant = sorted(s.tenants)[0]
    rt = _runtime(s)
    req = _erase_pending(rt, tenant, "rewrite-fails")
    import threading

    killed: list[int] = []

    def kill_the_rewrite() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if r.info("persistence")["aof_rewrite_in_progress"]:
                kids = _children(_redis_pid(r))
                if kids:
                    os.kill(kids[0], signal.SIGKILL)
                    killed.append(kids[0])
                    return
            time.sleep(0.05)

    t = threading.Thread(target=kill_the_rewrite, daemon=True)
    t.start()
    with pytest.raises(RuntimeError, match="AOF rewrite failed"):
        rt.requests.finish_pending()
    t.join(30)
    assert killed, "the rewrite's child process was never seen"
    assert r.info("persistence")["aof_last_bgrewrite_status"] == "err"
    assert _status(rt, tenant, req) == "pending" and _queued(r, tenant, req)
    assert "aof" not in [st["step"] for st in rt.consent.receipt(tenant, req.request_id)["steps"]]

    r.config_set("rdb-key-save-delay", "0")
    assert rt.requests.finish_pending() >= 1
    done = rt.consent.receipt(tenant, req.request_id)
    assert done["status"] == "done" and not _queued(r, tenant, req)
    assert [st["step"] for st in done["steps"]] == ["state", "tombstone", "store", "key", "quarantine", "dlq", "aof", "audit"]


def test_erasure_stays_pending_when_the_aof_rewrite_times_out(make_settings, slow_rewrites):
    """A rewrite that outlasts the handler's wait: TimeoutError, the receipt pending and queued."""
    r = slow_rewrites
    s = make_settings()
    tenant = sorted(s.tenants)[0]
    rt = _runtime(s)
    req = _erase_pending(rt, tenant, "rewrite-slow")
    rt.requests.aof_timeout = 1.0
    with pytest.raises(TimeoutError):
        rt.requests.finish_pending()
    assert r.info("persistence")["aof_rewrite_in_progress"]  # really still running
    assert _status(rt, tenant, req) == "pending" and _queued(r, tenant, req)
    r.config_set("rdb-key-save-delay", "0")
    _stop_rewrite(r)  # the slowed rewrite keeps its delay: end it, the retry starts a normal one
    rt.requests.aof_timeout = 120.0
    assert rt.requests.finish_pending() >= 1
    assert _status(rt, tenant, req) == "done" and not _queued(r, tenant, req)


@pytest.fixture
def aof_off(stack):
    """AOF turned off on the running Redis (no snapshots either: ``save ""``); turned on again,
    with its rewrite finished, afterwards. Yields the client and a function that turns RDB
    snapshots on (removing the dump.rdb they write, afterwards)."""
    r = redis.Redis.from_url(stack.redis_url)
    if stack.redis_dir is None:
        pytest.skip(f"needs Redis' folder on this machine ({stack.kind} stack) to remove the dump it writes")
    assert r.config_get("save")["save"] == ""
    dbfile = Path(r.config_get("dir")["dir"]) / r.config_get("dbfilename")["dbfilename"]
    r.config_set("appendonly", "no")
    try:
        yield r, lambda: r.config_set("save", "3600 1")
    finally:
        r.config_set("save", "")
        r.config_set("appendonly", "yes")  # starts a rewrite that writes a new base
        deadline = time.monotonic() + 60
        while (r.info("persistence")["aof_rewrite_in_progress"] or r.info("persistence")["aof_rewrite_scheduled"]) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert r.info("persistence")["aof_enabled"] and r.info("persistence")["aof_last_bgrewrite_status"] == "ok"
        dbfile.unlink(missing_ok=True)


def test_erasure_with_aof_off_and_no_snapshots_says_nothing_persists(make_settings, aof_off):
    """AOF off and no RDB snapshots: no copy on disk to purge. The receipt is done and its aof step
    says exactly that (``aof: disabled``, ``persistence: none``), not ``rewritten``."""
    r, _ = aof_off
    s = make_settings()
    tenant = sorted(s.tenants)[0]
    rt = _runtime(s)
    req = _erase_pending(rt, tenant, "aof-off")
    assert rt.requests.finish_pending() >= 1
    done = rt.consent.receipt(tenant, req.request_id)
    aof = next(st for st in done["steps"] if st["step"] == "aof")
    assert done["status"] == "done"
    assert {k: aof[k] for k in aof if k not in ("step", "at_ms")} == {"aof": "disabled", "persistence": "none"}


def test_erasure_with_rdb_snapshots_on_writes_a_fresh_snapshot(make_settings, aof_off):
    """AOF off, RDB snapshots on: a dump.rdb would keep the erased values, so the erasure writes a
    new snapshot (after its deletes) before the receipt says done, and the step says so."""
    r, snapshots_on = aof_off
    snapshots_on()
    s = make_settings()
    tenant = sorted(s.tenants)[0]
    rt = _runtime(s)
    req = _erase_pending(rt, tenant, "rdb-on")
    before = r.info("persistence")["rdb_last_save_time"]
    time.sleep(1.1)  # rdb_last_save_time counts seconds
    assert rt.requests.finish_pending() >= 1
    done = rt.consent.receipt(tenant, req.request_id)
    aof = next(st for st in done["steps"] if st["step"] == "aof")
    assert done["status"] == "done" and aof["aof"] == "disabled" and aof["rdb"] == "rewritten"
    info = r.info("persistence")
    assert info["rdb_last_save_time"] > before and info["rdb_last_bgsave_status"] == "ok"


def test_erasure_stays_pending_when_the_audit_append_fails(make_settings):
    """The audit record cannot be written (its topic was deleted from the broker): finish_pending
    raises AuditError, the receipt stays pending and queued; with the audit trail back, the next
    call completes it with exactly one aof and one audit step. A consent request whose audit
    append fails is not reported done either."""
    s = make_settings()
    tenant = sorted(s.tenants)[0]
    rt = _runtime(s)
    r = redis.Redis.from_url(s.redis_url)
    req = _erase_pending(rt, tenant, "audit-fails")
    good = rt.requests.audit
    # An audit log on a topic of its own, which is then deleted from the broker under it.
    doomed = f"audit.doomed-{uuid.uuid4().hex[:8]}"
    admin = admin_client(s)
    admin.create_topics([NewTopic(doomed, 1, 1)])[doomed].result(30)
    rt.requests.audit = open_audit_log(dataclasses.replace(s, audit_topic=doomed), "test", timeout=3.0)
    admin.delete_topics([doomed])[doomed].result(30)
    deadline = time.monotonic() + 30
    while doomed in admin.list_topics(timeout=10).topics and time.monotonic() < deadline:
        time.sleep(0.2)
    with pytest.raises(AuditError):
        rt.requests.finish_pending()
    assert _status(rt, tenant, req) == "pending" and _queued(r, tenant, req)
    opt_out = new_request("opt_out", tenant, "audit-fails-2", "test:edges")
    with pytest.raises(AuditError):
        rt.requests.handle(opt_out)
    assert (rt.consent.receipt(tenant, opt_out.request_id) or {}).get("status") != "done"

    rt.requests.audit = good
    assert rt.requests.finish_pending() >= 1
    done = rt.consent.receipt(tenant, req.request_id)
    assert done["status"] == "done" and not _queued(r, tenant, req)
    assert [st["step"] for st in done["steps"]] == ["state", "tombstone", "store", "key", "quarantine", "dlq", "aof", "audit"]
    assert rt.requests.handle(opt_out)["status"] == "done"
