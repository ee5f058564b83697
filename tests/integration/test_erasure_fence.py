"""The store's refusal of erased subjects and the in-flight fence (streams/erasure/fence.py), on
the real Redis and broker: the worker's own store writer, privacy request handler and pipeline."""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid

import pytest
import redis

from streams.connections import async_redis_client
from streams.erasure.fence import inflight_key
from streams.consent.requests import new_request
from streams.ingest import samples
from streams.ingest.processor import EventProcessor
from streams.records import Accepted, SourceRef
from streams.ingest.producer import encode_event, event_key
from streams.ops.metrics import Metrics
from streams.privacy.keys import subject_key_name
from streams.privacy.transforms import SubjectCipher
from streams.runtime import build_runtime
from streams.schema.registry import SchemaRegistry
from streams.sinks import store_keys as K
from streams.sinks.kafka_sink import OutRecord
from streams.sinks.store import StoreWriter
from streams.records import split_key
from tests.kafka_read import read_topic

pytestmark = pytest.mark.integration


def _runtime(s):
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    return build_runtime(s, registry, EventProcessor(registry, s.tenants, s.max_event_bytes), Metrics(), "test",
                         lambda: set())


def _accepted(s, rt, tenant: str, subjects: dict[str, int]) -> list[Accepted]:
    """Clean events as the pipeline makes them (keys fetched, so a subject key exists afterwards)."""
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    proc = EventProcessor(registry, s.tenants, s.max_event_bytes)
    rng = random.Random(3)
    out = []
    for subject, n in subjects.items():
        for i in range(n):
            e = samples.order(tenant, subject, rng)
            v = proc.validate(event_key(e), encode_event(registry, e, "avro"), SourceRef("raw", 0, i))
            key = rt.pipeline.keys.subject_keys(tenant, [subject])[subject]
            out.append(proc.finish(v, SubjectCipher(key), 1_700_000_000_000))
    return out


def _with_writer(s, rt, fn, lease_ms: int | None = None):
    """``fn(writer)`` on a new event loop with a store writer of its own (an asyncio Redis client
    belongs to the loop it first ran on), checking consent like the worker's."""
    async def run():
        w = StoreWriter(async_redis_client(s), rt.pipeline.gate.pseudonyms,
                        **({"lease_ms": lease_ms} if lease_ms else {}))
        try:
            return await fn(w)
        finally:
            await w.close()

    return asyncio.run(run())


def _store_ids(r: redis.Redis, tenant: str, subject: str) -> list[bytes]:
    return r.zrange(K.subject_index(tenant, subject), 0, -1)


def test_store_refuses_an_erased_subject_atomically_and_registers_the_batch(make_settings):
    """A batch gated before an erasure writes after it: the erased subject's events are refused
    (returned, nothing of them written), the key the batch made again is deleted, the other subject
    is written, and the batch is in flight for its tenant until it leaves."""
    s = make_settings()
    tenant = sorted(s.tenants)[0]
    rt = _runtime(s)
    r = redis.Redis.from_url(s.redis_url)
    gone, kept = f"gone-{uuid.uuid4().hex[:6]}", f"kept-{uuid.uuid4().hex[:6]}"
    rt.requests.handle(new_request("erase", tenant, gone, "test:fence"))  # marker set, key destroyed
    assert not r.exists(subject_key_name(tenant, gone))
    batch = _accepted(s, rt, tenant, {gone: 3, kept: 2})  # fetching keys made `gone`'s key again
    assert r.exists(subject_key_name(tenant, gone))

    async def write():
        w = rt.pipeline.store
        res = await w.write_batch(batch, "b-1")
        members = r.zrange(inflight_key(tenant), 0, -1)
        lapsed = await w.add_stats({}, ("b-1", {tenant}))
        return res, members, lapsed

    res, members, lapsed = asyncio.run(write())
    assert res.written == 2 and res.registered == {tenant} and not res.deleted
    assert sorted(a.event_id for a in res.refused) == sorted(a.event_id for a in batch if a.subject == gone)
    assert _store_ids(r, tenant, gone) == [] and len(_store_ids(r, tenant, kept)) == 2
    assert not any(r.exists(K.event_key(tenant, a.event_id)) for a in res.refused)
    assert not r.exists(subject_key_name(tenant, gone)), "the key made again after the erasure survived"
    assert members == [b"b-1"]
    assert lapsed == frozenset() and r.zcard(inflight_key(tenant)) == 0

    # A writer without pseudonyms (tools) checks no consent state: the control for the refusal.
    async def write_unchecked():
        w = StoreWriter(async_redis_client(s))
        try:
            return await w.write_batch([a for a in batch if a.subject == gone])
        finally:
            await w.close()

    assert asyncio.run(write_unchecked()).written == 3


def test_fence_holds_the_erasure_until_an_in_flight_batch_leaves(make_settings):
    """An erasure whose marker comes after a batch's store write does not tombstone before that
    batch has left (its topic write acknowledged); then its tombstones cover the batch's events."""
    s = make_settings()
    tenant = sorted(s.tenants)[0]
    rt = _runtime(s)
    r = redis.Redis.from_url(s.redis_url)
    subject = f"racing-{uuid.uuid4().hex[:6]}"
    batch = _accepted(s, rt, tenant, {subject: 4})
    res = _with_writer(s, rt, lambda w: w.write_batch(batch, "b-slow"))
    assert res.written == 4 and res.registered == {tenant}

    req = new_request("erase", tenant, subject, "test:fence")
    receipts: list[dict] = []
    erasure = threading.Thread(target=lambda: receipts.append(rt.requests.handle(req)), daemon=True)
    erasure.start()
    who = rt.pipeline.gate.pseudonyms(tenant, subject)
    deadline = time.monotonic() + 30
    while not rt.consent.state(tenant, who).erased:  # the marker is set ...
        assert time.monotonic() < deadline, "the erasure never set its marker"
        time.sleep(0.01)
    for _ in range(20):  # ... and for as long as the batch is registered, nothing further happens
        assert erasure.is_alive() and rt.consent.receipt(tenant, req.request_id) is None
        assert len(_store_ids(r, tenant, subject)) == 4, "the store was purged before the batch left"
        time.sleep(0.01)
    lapsed = _with_writer(s, rt, lambda w: w.add_stats({}, ("b-slow", {tenant})))
    erasure.join(30)
    assert not erasure.is_alive() and lapsed == frozenset()
    tomb = next(st for st in receipts[0]["steps"] if st["step"] == "tombstone")
    assert tomb["events"] == 4 and tomb["in_flight_waited"] == 1 and tomb["in_flight_lapsed"] == 0
    assert rt.requests.metrics.value("streams_erasure_fence_waits_total") == 1
    assert _store_ids(r, tenant, subject) == []


def test_a_lapsed_lease_does_not_block_the_erasure_and_the_late_batch_tombstones_itself(make_settings):
    """A batch registered by a worker that then stalls: the erasure waits only until its lease
    lapses (counted), and the batch, coming back after the tombstones, finds its lease lapsed and
    tombstones its own events of the erased subject after them."""
    s = make_settings()
    tenant = sorted(s.tenants)[0]
    rt = _runtime(s)
    subject = f"stalled-{uuid.uuid4().hex[:6]}"
    batch = _accepted(s, rt, tenant, {subject: 3})
    assert _with_writer(s, rt, lambda w: w.write_batch(batch, "b-stalled"), lease_ms=300).registered == {tenant}
    receipt = rt.requests.handle(new_request("erase", tenant, subject, "test:fence"))  # returns: bounded
    tomb = next(st for st in receipt["steps"] if st["step"] == "tombstone")
    assert tomb["in_flight_waited"] == 1 and tomb["in_flight_lapsed"] == 1 and tomb["events"] == 3
    assert rt.requests.metrics.value("streams_erasure_fence_lapsed_total") == 1

    # The stalled batch comes back: its topic write lands after the erasure's tombstones ...
    rt.pipeline.kafka.deliver([OutRecord(s.tenant_topic(tenant), a.key, a.value, [], partition_key=a.partition_key)
                               for a in batch])
    # ... then it leaves, learns that its lease lapsed, and tombstones what the erasure could not.
    lapsed = _with_writer(s, rt, lambda w: w.add_stats({}, ("b-stalled", {tenant})))
    assert lapsed == {tenant}
    asyncio.run(rt.pipeline._tombstone_lapsed(batch, lapsed))
    assert rt.pipeline.metrics.value("streams_erasure_late_tombstones_total") == 3
    last: dict[str, bool] = {}
    events_seen = 0
    for m in read_topic(s.kafka_bootstrap, s.tenant_topic(tenant), expect=None, timeout=30, idle=2):
        subj, event_id = split_key(m.key())
        if subj == subject:
            last[event_id] = m.value() is not None
            events_seen += m.value() is not None
    assert events_seen == 3, "the read does not find the late events it must see tombstoned"
    assert len(last) == 3 and not any(last.values()), last
