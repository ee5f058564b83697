"""The worker reads events.raw read_committed (issue 9: every consumer reads read_committed).

Before: faust-streaming's consumer read uncommitted (it reads read_committed only with its
exactly-once mode), so an event of an aborted transaction on events.raw was delivered to the
tenant's topic and store. Now the worker never delivers it.

read_committed has a price, measured here: an open transaction holds back every later record of
its partition, every tenant's, until the broker aborts it (the producer's transaction.timeout.ms,
capped by the broker's transaction.max.timeout.ms, plus the broker's abort check interval:
streams.devstack.stack.TRANSACTION_BOUNDS). Only pipeline principals can write events.raw (a
tenant's producer writes events.raw.<t> and has no transactional id), so only they can do this.
"""

from __future__ import annotations

import time
import uuid

import pytest
import redis
from confluent_kafka import Producer

from streams.ingest import samples
from streams.ingest.producer import encode_event, event_key
from streams.schema.registry import SchemaRegistry
from streams.sinks import store_keys as K
from tests.kafka_read import read_topic

pytestmark = pytest.mark.e2e

# The open transaction's timeout: the broker aborts it after this (+ its check interval, 5 s).
OPEN_TX_TIMEOUT_MS = 5000


def _tx(s, timeout_ms: int = 20000) -> Producer:
    p = Producer({"bootstrap.servers": s.kafka_bootstrap, "partitioner": "murmur2_random", "log_level": 0,
                  "transactional.id": f"raw-tx-{uuid.uuid4().hex[:8]}", "transaction.timeout.ms": timeout_ms})
    p.init_transactions(20)
    p.begin_transaction()
    return p


def test_an_aborted_event_on_events_raw_is_never_delivered(make_settings, start_worker):
    s = make_settings()
    tenant = sorted(s.tenants)[0]
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    start_worker(s)
    # Same subject, so the same partition: the committed one comes after the aborted one there.
    aborted_event, committed_event = samples.signup(tenant, "tx-1"), samples.order(tenant, "tx-1")
    aborted = _tx(s)
    aborted.produce(s.raw_topic, encode_event(registry, aborted_event, "avro"), event_key(aborted_event))
    aborted.flush(20)
    aborted.abort_transaction(20)
    committed = _tx(s)
    committed.produce(s.raw_topic, encode_event(registry, committed_event, "avro"), event_key(committed_event))
    committed.commit_transaction(20)

    got = read_topic(s.kafka_bootstrap, s.tenant_topic(tenant), expect=1, timeout=60)
    r = redis.Redis.from_url(s.redis_url)
    assert [dict(m.headers())["event-id"].decode() for m in got] == [committed_event["event_id"]]
    assert r.exists(K.event_key(tenant, committed_event["event_id"]))
    # The worker is past the aborted record's offset (it handled the later one in that partition).
    assert not r.exists(K.event_key(tenant, aborted_event["event_id"]))
    assert len(read_topic(s.kafka_bootstrap, s.tenant_topic(tenant), timeout=30, idle=2)) == 1


def test_an_open_transaction_on_events_raw_holds_others_back_only_until_it_times_out(make_settings,
                                                                                      start_worker):
    s = make_settings()
    hostile, victim = sorted(s.tenants)
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    start_worker(s)

    opened = time.monotonic()
    pending_event = samples.signup(hostile, "open-1")
    open_tx = _tx(s, OPEN_TX_TIMEOUT_MS)  # never committed nor aborted by the test
    where: dict[str, int] = {}
    open_tx.produce(s.raw_topic, encode_event(registry, pending_event, "avro"), event_key(pending_event),
                    on_delivery=lambda err, msg: where.setdefault("p", msg.partition()))
    open_tx.flush(20)
    blocked_partition = where["p"]

    # The victim's events after it, in every partition (same partitioner as the project's producer).
    p = Producer({"bootstrap.servers": s.kafka_bootstrap, "partitioner": "murmur2_random", "log_level": 0,
                  "enable.idempotence": True})
    partition_of: dict[str, int] = {}
    events = [samples.order(victim, f"v-{i}") for i in range(24)]
    for e in events:
        p.produce(s.raw_topic, encode_event(registry, e, "avro"), event_key(e),
                  on_delivery=lambda err, msg, i=e["event_id"]: partition_of.setdefault(i, msg.partition()))
    assert p.flush(30) == 0
    blocked = {i for i, part in partition_of.items() if part == blocked_partition}
    assert blocked and len(blocked) < len(events), "the victim needs events in the blocked and other partitions"

    # Every victim event is delivered, those behind the open transaction once the broker aborts it:
    # a bounded wait (the transaction's timeout + the broker's abort check + the worker's poll).
    got = read_topic(s.kafka_bootstrap, s.tenant_topic(victim), expect=len(events), timeout=45)
    took = time.monotonic() - opened
    assert {dict(m.headers())["event-id"].decode() for m in got} == {e["event_id"] for e in events}
    print(f"{len(blocked)} of {len(events)} victim events were behind the open transaction; all delivered "
          f"{took:.1f}s after it opened (its timeout {OPEN_TX_TIMEOUT_MS / 1000:.0f}s + the broker's abort check)")
    # The broker aborted it: the hostile event, before the victim's in that partition, is never delivered.
    assert not redis.Redis.from_url(s.redis_url).exists(K.event_key(hostile, pending_event["event_id"]))
