"""The Redis store on a real Redis: idempotent writes, indexes, queries, AOF on."""

from __future__ import annotations

import asyncio
import random

import pytest
import redis

from streams.connections import async_redis_client
from streams.ingest import samples
from streams.ingest.processor import EventProcessor
from streams.records import Accepted, SourceRef
from streams.ingest.producer import encode_event, event_key
from streams.schema.registry import SchemaRegistry
from streams.sinks import store_keys
from streams.sinks.store import StoreReader, StoreWriter
from tests.disk_search import redis_values

pytestmark = pytest.mark.integration


def _accepted(s, events):
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    proc = EventProcessor(registry, s.tenants, s.max_event_bytes)
    out = []
    for i, e in enumerate(events):
        o = proc.process(event_key(e), encode_event(registry, e, "avro"), SourceRef("raw", 0, i))
        assert isinstance(o, Accepted), o
        out.append(o)
    return out


def test_writes_are_idempotent_and_indexed(make_settings):
    s = make_settings()
    tenant = sorted(s.tenants)[0]
    # Seeded by this run's id: the event ids (drawn from the rng) must be this test's alone, since the
    # end of the test scans the whole database for them and other tests share the Redis. A fixed seed
    # made another tenant's copies of the same ids show up there.
    rng = random.Random(s.app_id)
    events = [samples.order(tenant, "alice", rng, event_time=1_700_000_000_000 + i * 1000) for i in range(5)]
    events += [samples.signup(tenant, "bob", rng, event_time=1_700_000_100_000)]
    acc = _accepted(s, events)

    async def write():
        w = StoreWriter(async_redis_client(s))
        await w.write_batch(acc)
        await w.write_batch(acc[:3])  # a redelivered batch changes nothing
        await w.close()

    asyncio.run(write())
    reader = StoreReader.from_settings(s)
    assert reader.count(tenant) == 6
    assert reader.count(tenant, "order_placed") == 5
    alice = reader.by_subject(tenant, "alice")
    assert [d["event_id"] for d in alice] == [e["event_id"] for e in events[:5]]  # ordered by event time
    window = reader.by_type(tenant, "order_placed", 1_700_000_001_000, 1_700_000_003_000)
    assert [d["event_id"] for d in window] == [e["event_id"] for e in events[1:4]]
    page = reader.by_type(tenant, "order_placed", limit=2, offset=2)
    assert [d["event_id"] for d in page] == [e["event_id"] for e in events[2:4]]
    doc = reader.get(tenant, events[5]["event_id"])
    assert doc["subject"] == "bob" and doc["event"]["lineage"]["source_topic"] == "raw"
    # Another tenant's keyspace sees none of it.
    other = sorted(s.tenants)[1]
    assert reader.count(other) == 0 and reader.get(other, events[0]["event_id"]) is None
    # Every key of the whole database whose name or value mentions one of these events is in the
    # tenant's keyspace: the documents, the subject and time indexes, the type indexes.
    ids = [e["event_id"].encode() for e in events]
    holding = {k for k, v in redis_values(redis.Redis.from_url(s.redis_url)).items() if any(i in v for i in ids)}
    prefix = store_keys.store_prefix(tenant)
    want = {store_keys.event_key(tenant, e["event_id"]) for e in events} | {
        store_keys.subject_index(tenant, "alice"), store_keys.subject_index(tenant, "bob"), store_keys.time_index(tenant),
        store_keys.type_index(tenant, "order_placed")}
    assert want <= holding, want - holding
    assert all(k.startswith(prefix) for k in holding), sorted(k for k in holding if not k.startswith(prefix))


def test_redis_runs_with_aof(stack):
    r = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    assert r.config_get("appendonly")["appendonly"] == "yes"


def test_stats_of_a_deleted_tenant_are_not_written(make_settings):
    """A batch that counted events of a tenant deleted meanwhile brings no key of it back (the
    delete-under-load test found ``k:{t}:stats`` re-created after the receipt)."""
    from streams.sinks.store import stats_key
    from streams.tenancy.registry import TenantRegistry

    s = make_settings()
    live, gone = sorted(s.tenants)
    r = redis.Redis.from_url(s.redis_url)
    TenantRegistry(r).mark_deleted(gone)

    async def count():
        w = StoreWriter(async_redis_client(s))
        await w.add_stats({live: {"delivered": 2}, gone: {"delivered": 3}})
        await w.close()

    asyncio.run(count())
    assert r.hgetall(stats_key(live)) == {b"delivered": b"2"}  # the control: the same call counts the live one
    assert r.exists(stats_key(gone)) == 0
