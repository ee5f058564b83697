"""One hostile producer's Kafka transactions do not stall the other tenants (issue 9, point 1).

Before: a transactional producer on privacy.requests left a marker the request reader never
got past, and every batch waited for the requests "published so far"; a victim tenant's
event was not delivered in 90 s. Now a worker reads requests up to the last stable offset
and follows its position past markers; the tenant raw topics are read read_committed.
"""

from __future__ import annotations

import time
import uuid

import pytest
import redis
from confluent_kafka import Producer

from streams.consent.requests import new_request
from streams.ingest import samples
from streams.ingest.producer import EventProducer, encode_event, event_key
from streams.schema.registry import SchemaRegistry
from streams.sinks import store_keys as K
from tests.kafka_read import read_topic

pytestmark = pytest.mark.e2e


def _tx(s) -> Producer:
    p = Producer({"bootstrap.servers": s.kafka_bootstrap, "partitioner": "murmur2_random",
                  "transactional.id": f"hostile-{uuid.uuid4().hex[:8]}", "log_level": 0})
    p.init_transactions(20)
    p.begin_transaction()
    return p


def test_open_and_aborted_transactions_delay_no_tenant(make_settings, start_worker):
    s = make_settings()
    hostile, victim = sorted(s.tenants)
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    start_worker(s)

    # The hostile tenant: a request left in an open transaction, an event in an open transaction
    # on its raw topic, and an event in a transaction it aborts.
    open_request = _tx(s)
    req = new_request("opt_out", hostile, "h-1", "hostile")
    open_request.produce(s.requests_topic, req.to_json(), req.key)
    open_request.flush(20)
    aborted = _tx(s)
    aborted_event = samples.signup(hostile, "h-3")
    aborted.produce(s.tenant_raw_topic(hostile), encode_event(registry, aborted_event, "avro"),
                    event_key(aborted_event))
    aborted.flush(20)
    aborted.abort_transaction(20)
    committed = _tx(s)
    committed_event = samples.order(hostile, "h-4")
    committed.produce(s.tenant_raw_topic(hostile), encode_event(registry, committed_event, "avro"),
                      event_key(committed_event))
    committed.commit_transaction(20)
    # Opened after the committed one: a read_committed reader stops at an open transaction's first
    # record in its partition (Kafka's last stable offset), so a later commit there would wait too.
    open_raw = _tx(s)
    pending_event = samples.signup(hostile, "h-2")
    open_raw.produce(s.tenant_raw_topic(hostile), encode_event(registry, pending_event, "avro"),
                     event_key(pending_event))
    open_raw.flush(20)

    # The victim publishes as usual; all of it is delivered while the transactions stay open.
    events = [samples.order(victim, f"v-{i % 5}") for i in range(20)]
    p = EventProducer(s.kafka_bootstrap, s.raw_topic, registry)
    started = time.monotonic()
    for e in events:
        p.send(e)
    p.flush()
    delivered = read_topic(s.kafka_bootstrap, s.tenant_topic(victim), expect=len(events), timeout=60)
    took = time.monotonic() - started
    assert len({m.key() for m in delivered}) == len(events)
    print(f"victim's 20 events delivered {took:.2f}s after publishing, with open transactions around")

    # The hostile tenant's committed event is delivered; its aborted one never is, nor (yet) the
    # event of its open transaction.
    mine = read_topic(s.kafka_bootstrap, s.tenant_topic(hostile), expect=1, timeout=60)
    r = redis.Redis.from_url(s.redis_url)
    assert r.exists(K.event_key(hostile, committed_event["event_id"]))
    assert len(mine) == 1
    assert not r.exists(K.event_key(hostile, aborted_event["event_id"]))
    assert not r.exists(K.event_key(hostile, pending_event["event_id"]))
    open_raw.abort_transaction(20)
    open_request.abort_transaction(20)


def test_a_tenant_topic_deleted_by_hand_under_load_affects_only_that_tenant(make_settings, start_worker):
    """Before: the worker retried the missing topic for ever and every tenant waited. Now the
    tenant whose topic is gone is set aside (DLQ ``tenant_unavailable``) and the others go on."""
    from streams.dlq.record import decode_dlq
    from streams.connections import admin_client
    from tests.load import steady_load

    s = make_settings()
    broken, healthy = sorted(s.tenants)
    start_worker(s)
    with steady_load(s, [broken, healthy]) as sent:
        time.sleep(2)
        admin = admin_client(s)  # kept referenced: the futures fail when their client is destroyed
        admin.delete_topics([s.tenant_topic(broken)])[s.tenant_topic(broken)].result(30)
        time.sleep(4)
    got = read_topic(s.kafka_bootstrap, s.tenant_topic(healthy), expect=len(sent[healthy]), timeout=90)
    delivered = {m.key().decode().split("/", 1)[1] for m in got}
    assert delivered >= set(sent[healthy]), f"{len(set(sent[healthy]) - delivered)} of the healthy tenant's missing"
    dlq = [decode_dlq(m.value()) for m in read_topic(s.kafka_bootstrap, s.dlq_topic, timeout=30, idle=5)]
    assert dlq and {d["reason"] for d in dlq} == {"tenant_unavailable"}
    print(f"healthy tenant: {len(delivered)} delivered; broken tenant: {len(dlq)} set aside")
