"""Erasure across workers (issue 9, last point): an event of a subject being erased on another
worker is delivered before the erasure and then tombstoned, or dropped; after the receipt
nothing of the subject is in the store, and on the tenant topic each of its keys ends in a
tombstone.

Two workers. The subjects' events arrive on their tenant's own raw topic, which a separate
consumer group reads, so the worker that has their events is not necessarily the one that
applies their privacy requests. The slow worker is paused by failpoints between its consent
gate and its store write (``batch.gated``) and between its store write and its topic write
(``batch.stored``); the test files one erasure while the slow worker is in each pause (it
waits for the pause's log line), so both races are hit on every run:

- ``refused``: gated before the erasure, written to the store after the erasure's marker;
- ``fenced``: in the store before the erasure's marker, on the topic after it (before the fix
  the event landed after the erasure's tombstone and survived compaction).

The requests are applied by the other worker while the slow one holds its batch (its privacy
lock is held, so it cannot apply them itself). Each is put on a partition of privacy.requests that
the fast worker owns (read from the slow worker's log of its Faust assignment): the gate waits on
every partition whatever partitioner a producer used, so that is a valid placement, and the fast
worker applies it within its 100 ms timer. On the subject's own partition the race happens as well
when the slow worker owns it, but only after the fast worker's 2 s patience (wait_or_apply), which
would need longer pauses for the same certainty.
"""

from __future__ import annotations

import re
import threading
import time
import uuid

import pytest
import redis
from confluent_kafka import Producer

from streams.consent.requests import new_request
from streams.consent.store import ConsentStore
from streams.ingest import samples
from streams.ingest.producer import EventProducer
from streams.schema.registry import SchemaRegistry
from streams.sinks import store_keys as K
from streams.sinks.partitioning import partition_for
from streams.records import split_key
from tests.kafka_groups import committed_lag, wait_group
from tests.kafka_read import read_topic

pytestmark = pytest.mark.e2e

PAUSE_MS = 2000  # >> the fast worker's delay in applying a request on its own partition (100 ms timer)


def _ints(spec: str) -> set[int]:
    """Faust's partition set notation: ``0-1``, ``0, 2``, ``3``."""
    out: set[int] = set()
    for part in spec.replace(" ", "").split(","):
        lo, _, hi = part.partition("-")
        out |= set(range(int(lo), int(hi or lo) + 1))
    return out


def _faust_partitions(worker, topic: str) -> set[int]:
    """The partitions of ``topic`` the worker's Faust consumer was last assigned (from its log's table)."""
    tables = worker.log_text().split("Setting newly assigned partitions")
    assert len(tables) > 1, "the worker never logged an assignment"
    m = re.search(rf"\| {re.escape(topic)} +\| \{{([0-9, -]+)\}}", tables[-1].split("for group")[0])
    return _ints(m.group(1)) if m else set()


def _subjects(tenant: str, run: str, n: int) -> dict[int, list[str]]:
    """Two subjects per raw partition (of ``n``), found by Kafka's partitioner."""
    out: dict[int, list[str]] = {p: [] for p in range(n)}
    i = 0
    while any(len(v) < 2 for v in out.values()):
        # Fixed width: no subject's name is a prefix of another's (``race-x-1`` of ``race-x-12``), which
        # made the store search below count a live subject's documents as the erased one's.
        subject = f"race-{run}-{i:04d}"
        p = partition_for(f"{tenant}/{subject}".encode(), n)
        if len(out[p]) < 2:
            out[p].append(subject)
        i += 1
    return out


def _wait_log(worker, pattern: str, after: int, timeout: float) -> tuple[re.Match, int]:
    """The first match of ``pattern`` in the worker's log past character ``after``, and where it ends."""
    deadline = time.monotonic() + timeout
    rx = re.compile(pattern)
    while True:
        text = worker.log_text()
        m = rx.search(text, after)
        if m:
            return m, m.end()
        assert time.monotonic() < deadline, f"{pattern!r} not in the worker's log in {timeout} s:\n{text[-3000:]}"
        time.sleep(0.02)


def _store_holds(r: redis.Redis, tenant: str, subject: str) -> list[str]:
    """Every key of the tenant's store keyspace that names the subject or whose value does (the
    subject's id as a whole JSON string or key part, not as a prefix of another subject's id)."""
    found = []
    in_key = re.compile(rb":" + re.escape(subject.encode()) + rb"(:|$)")
    in_value = b'"' + subject.encode() + b'"'
    for key in r.scan_iter(match=f"{K.store_prefix(tenant)}*", count=1000):
        if in_key.search(key):
            found.append(key.decode())
        elif r.type(key) == b"string" and in_value in (r.get(key) or b""):
            found.append(key.decode())
    return found


def _erase(producer: Producer, s, tenant: str, subject: str, partition: int) -> str:
    req = new_request("erase", tenant, subject, "test:race", None, "race test")
    producer.produce(s.requests_topic, req.to_json(), req.key, partition=partition)
    assert producer.flush(30) == 0
    return req.request_id


def _done(consent: ConsentStore, tenant: str, request_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        receipt = consent.receipt(tenant, request_id)
        if receipt and receipt.get("status") == "done":
            return receipt
        assert time.monotonic() < deadline, f"erasure {request_id} not done in {timeout} s: {receipt}"
        time.sleep(0.05)


def test_erasure_racing_another_workers_batch_leaves_nothing(make_settings, start_worker):
    s = make_settings(partitions=2)
    tenant = sorted(s.tenants)[0]
    topic_raw = s.tenant_raw_topic(tenant)
    run = uuid.uuid4().hex[:8]
    fast = start_worker(s, ready=False)
    slow = start_worker(s, ready=False, extra_env={
        "STREAMS_FAILPOINTS": f"batch.gated=sleep:{PAUSE_MS},batch.stored=sleep:{PAUSE_MS}"})
    fast.wait_ready()
    slow.wait_ready()
    # Both in both groups before any event, so neither holds a partition it is about to lose.
    wait_group(s.kafka(), s.app_id, lambda g: g.state == "STABLE" and len(g.members) == 2, 60, "two workers")
    wait_group(s.kafka(), f"{s.app_id}.tenant-raw",
               lambda g: g.state == "STABLE" and len(g.members) == 2 and g.assigned == 2 * len(s.tenants), 60,
               "two tenant raw consumers with every partition assigned")

    subjects = _subjects(tenant, run, s.partitions)
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    sent: dict[str, list[str]] = {x: [] for xs in subjects.values() for x in xs}
    stop = threading.Event()
    errors: list[BaseException] = []

    def load() -> None:  # every subject's events keep flowing, before, during and after its erasure
        try:
            p = EventProducer(s.kafka_bootstrap, topic_raw, registry)
            while not stop.is_set():
                for subject in sent:
                    e = samples.order(tenant, subject)
                    p.send(e)
                    sent[subject].append(e["event_id"])
                p.flush()
                stop.wait(0.1)
        except BaseException as exc:
            errors.append(exc)

    th = threading.Thread(target=load, daemon=True)
    th.start()
    r = redis.Redis.from_url(s.redis_url)
    consent = ConsentStore(r)
    requests = Producer({**s.kafka(), "acks": "all", "partitioner": "murmur2_random", "log_level": 0})
    try:
        # Which of the tenant raw partitions the slow worker has (the range assignor gives it one).
        m, pos = _wait_log(slow, rf"failpoint batch\.gated: sleeping \d+ ms [^\n]*{re.escape(topic_raw)}\[(\d)\]",
                           0, 30)
        q = int(m.group(1))
        refused, fenced = subjects[q]
        # A partition of privacy.requests the fast worker applies (the slow one's Faust consumer has
        # the other; the group is stable, so its last logged assignment is its current one).
        slow_owns = _faust_partitions(slow, s.raw_topic)
        assert len(slow_owns) == 1, f"expected one events.raw partition on the slow worker: {slow_owns}"
        applied_by_fast = 1 - slow_owns.pop()
        # Positive control: the searches below find both subjects' data before their erasure (the
        # slow worker pauses at batch.stored after its store write).
        _wait_log(slow, rf"failpoint batch\.stored: [^\n]*{re.escape(topic_raw)}\[{q}\]", pos, 15)
        for subject in (refused, fenced):
            assert _store_holds(r, tenant, subject), f"{subject}: the store search finds nothing before the erasure"
        # 1. The slow worker has gated a batch and pauses before its store write: erase `refused` now
        # (a pause that starts from now on: one seen earlier may be over).
        _, pos = _wait_log(slow, rf"failpoint batch\.gated: [^\n]*{re.escape(topic_raw)}\[{q}\]",
                           len(slow.log_text()), 15)
        refused_id = _erase(requests, s, tenant, refused, applied_by_fast)
        # 2. The same batch is in the store and pauses before its topic write: erase `fenced` now.
        _, pos = _wait_log(slow, rf"failpoint batch\.stored: [^\n]*{re.escape(topic_raw)}\[{q}\]", pos, 15)
        fenced_id = _erase(requests, s, tenant, fenced, applied_by_fast)
        receipts = {refused: _done(consent, tenant, refused_id, 40), fenced: _done(consent, tenant, fenced_id, 40)}
        # Right after the receipts, and again once every event sent so far is processed. Problems are
        # collected and reported together: each says which race let what through.
        problems = [f"{x} ({'refused' if x == refused else 'fenced'}): the store holds {len(keys)} of its "
                    f"keys right after the receipt, e.g. {keys[:2]}"
                    for x in receipts if (keys := _store_holds(r, tenant, x))]
        stop.set()
        th.join(30)
        assert not errors, errors
        wait_done = time.monotonic() + 40
        while True:  # the slow worker's last batches (every batch pauses twice)
            if not any(committed_lag(s.kafka(), f"{s.app_id}.tenant-raw", topic_raw).values()):
                break
            assert time.monotonic() < wait_done, "the workers did not process every event"
            time.sleep(0.5)
    finally:
        stop.set()
        th.join(30)

    problems += [f"{x}: the store holds {len(keys)} of its keys once all is processed, e.g. {keys[:2]}"
                 for x in receipts if (keys := _store_holds(r, tenant, x))]
    # The tenant topic, read from the start with a plain consumer: the subjects' events are there
    # (delivered before their erasure), and each of their keys ends in a tombstone.
    last: dict[str, dict[str, bool]] = {x: {} for x in receipts}
    delivered = {x: 0 for x in receipts}
    for msg in read_topic(s.kafka_bootstrap, s.tenant_topic(tenant), expect=None, timeout=30, idle=3):
        subject, event_id = split_key(msg.key())
        if subject in last:
            last[subject][event_id] = msg.value() is not None
            delivered[subject] += msg.value() is not None
    for subject, keys in last.items():
        assert delivered[subject], f"{subject}: the search finds none of its events on the tenant topic"
        live = sorted(e for e, alive in keys.items() if alive)
        if live:
            problems.append(f"{subject} ({'refused' if subject == refused else 'fenced'}): {len(live)} of "
                            f"{len(keys)} of its keys end in an event, not a tombstone, e.g. {live[:2]}")
    assert not problems, "\n".join(problems)
    # Both races happened: the slow worker's store write refused events gated before the erasure,
    # and the erasure of `fenced` waited for the slow worker's batch before its tombstones.
    assert re.search(r"store refused [1-9]\d* events? of erased subjects", slow.log_text()), \
        "the slow worker's store write refused nothing: the gate race was not hit"
    tomb = next(x for x in receipts[fenced]["steps"] if x["step"] == "tombstone")
    assert tomb.get("in_flight_waited", 0) >= 1, f"the fence did not wait: {receipts[fenced]['steps']}"
    print(f"partition {q}; receipts: {receipts}")
