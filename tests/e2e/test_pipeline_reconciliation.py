"""A worker process, a mixed batch, and a reconciliation: every acknowledged raw event ends in exactly one place."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
import redis

from streams.ingest import samples
from streams.ingest.producer import EventProducer, encode_event, event_key
from streams.schema.registry import SchemaRegistry
from streams.sinks import store_keys
from streams.sinks.partitioning import partition_for
from tests.kafka_read import read_topic

pytestmark = pytest.mark.e2e


def test_mixed_batch_reconciles_exactly_once(make_settings, start_worker, stack):
    s = make_settings(max_event_bytes=8192)
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    t1, t2 = sorted(s.tenants)
    rng = random.Random(3)
    valid = []
    for i in range(40):
        tenant = t1 if i % 2 else t2
        maker = [samples.signup, samples.order, samples.support][i % 3]
        valid.append((maker(tenant, f"u{i % 7}", rng), "avro" if i % 4 else "json"))
    bad = samples.bad_records(t1, registry, s.max_event_bytes)

    producer = EventProducer(s.kafka_bootstrap, s.raw_topic, registry)
    for event, fmt in valid:
        producer.send_raw(event_key(event), encode_event(registry, event, fmt))
    for _reason, key, value in bad:
        producer.send_raw(key, value)
    producer.flush()
    assert producer.acked == len(valid) + len(bad) and producer.failed == 0

    worker = start_worker(s)

    expected_by_tenant = Counter(e["tenant_id"] for e, _ in valid)
    tenant_msgs = {t: read_topic(s.kafka_bootstrap, s.tenant_topic(t), expect=expected_by_tenant[t], timeout=60)
                   for t in (t1, t2)}
    dlq = read_topic(s.kafka_bootstrap, s.dlq_topic, expect=len(bad), timeout=60)

    # Every raw offset is accounted for exactly once, across the tenant topics and the DLQ.
    places: Counter = Counter()
    clean_registry = SchemaRegistry.load_dir(s.schemas_dir / "clean")
    from streams.schema import codec

    delivered_ids = {}
    for t, msgs in tenant_msgs.items():
        for m in msgs:
            entry, event = codec.decode(clean_registry, m.value())
            lin = event["lineage"]
            places[(lin["source_partition"], lin["source_offset"])] += 1
            assert event["tenant_id"] == t
            # keyed by event, partitioned by subject (Kafka's default partitioner on the subject id)
            assert m.key() == f"{event['subject_id']}/{event['event_id']}".encode()
            assert m.partition() == partition_for(event["subject_id"].encode(), s.tenant_partitions)
            delivered_ids[str(event["event_id"])] = t
    dlq_docs = [json.loads(m.value()) for m in dlq]
    for d in dlq_docs:
        places[(d["source"]["partition"], d["source"]["offset"])] += 1

    report = (f"delivered={sum(len(v) for v in tenant_msgs.values())} dlq={len(dlq_docs)} "
              f"expected valid={len(valid)} bad={len(bad)}")
    assert sum(places.values()) == len(valid) + len(bad), report
    assert all(n == 1 for n in places.values()), f"duplicates: {[k for k, n in places.items() if n > 1]}; {report}"
    assert set(delivered_ids) == {e["event_id"] for e, _ in valid}, report

    # Each bad kind landed with its reason.
    assert Counter(d["reason"] for d in dlq_docs) == Counter(r for r, _, _ in bad)
    for d in dlq_docs:
        assert d["source"]["topic"] == s.raw_topic and d["payload_fingerprint"]

    # The store holds every valid event, indexed by subject and type.
    r = redis.Redis.from_url(s.redis_url, decode_responses=True)
    for event, _ in valid:
        doc = r.get(store_keys.event_key(event["tenant_id"], event["event_id"]))
        assert doc is not None, event["event_id"]
        assert json.loads(doc)["subject"] == event["subject_id"]
        assert r.zscore(store_keys.subject_index(event["tenant_id"], event["subject_id"]), event["event_id"])
    for t in (t1, t2):
        assert r.zcard(store_keys.time_index(t)) == expected_by_tenant[t]

    # No raw PII of the bad events in the DLQ or the worker's log.
    canary = "bad.actor@example.com"
    assert all(canary not in m.value().decode() for m in dlq)
    assert worker.stop() == 0, worker.log_text()[-2000:]
    assert canary not in worker.log_text()


def test_worker_keeps_running_after_bad_events(make_settings, start_worker):
    s = make_settings()
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    tenant = sorted(s.tenants)[0]
    worker = start_worker(s)
    producer = EventProducer(s.kafka_bootstrap, s.raw_topic, registry)
    for _reason, key, value in samples.bad_records(tenant, registry, s.max_event_bytes):
        producer.send_raw(key, value)
    good = samples.order(tenant, "after-bad")
    producer.send(good)
    producer.flush()
    msgs = read_topic(s.kafka_bootstrap, s.tenant_topic(tenant), expect=1, timeout=60)
    assert len(msgs) == 1
    assert worker.proc.poll() is None, "worker died on bad input"
