"""The requests reader and the ordering gate against the real broker and Redis."""

from __future__ import annotations

import hashlib
import json

import pytest
import redis
from confluent_kafka import Producer

from streams.consent.exceptions import RequestsNotApplied
from streams.consent.requests import new_request
from streams.consent.state import DropReason
from streams.ingest.processor import EventProcessor
from streams.ops.metrics import Metrics
from streams.runtime import build_runtime
from streams.schema.registry import SchemaRegistry
from tests.kafka_read import read_topic

pytestmark = pytest.mark.integration


def _publish(s, req) -> tuple[int, int]:
    p = Producer({"bootstrap.servers": s.kafka_bootstrap, "partitioner": "murmur2_random"})
    delivered = []
    p.produce(s.requests_topic, req.to_json(), req.key, on_delivery=lambda e, m: delivered.append(m))
    p.flush(10)
    return delivered[0].partition(), delivered[0].offset()


def test_requests_are_applied_in_order_and_gate_the_batch(make_settings):
    s = make_settings()
    tenant = sorted(s.tenants)[0]
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    rt = build_runtime(s, registry, EventProcessor(registry, s.tenants, s.max_event_bytes), Metrics(), "test",
                       lambda: set())
    reader, gate = rt.request_reader, rt.pipeline.gate
    assert reader.behind() == {}
    reader.wait_applied(reader.ends.partitions, timeout=1)  # nothing published: nothing to wait for

    opt_out = new_request("opt_out", tenant, "g-1", "test")
    partition, offset = _publish(s, opt_out)
    assert reader.behind() == {partition: (0, offset + 1)}
    with pytest.raises(RequestsNotApplied):
        reader.wait_applied([partition], timeout=0.3)  # published, not applied: a batch must not go on

    # Another worker holds the partition's lease: this one must not apply it, nor go on.
    lease = f"privacy:lease:{s.requests_topic}:{partition}"
    r = redis.Redis.from_url(s.redis_url)
    r.set(lease, "someone-else", px=5000)
    with pytest.raises(RequestsNotApplied):
        reader.catch_up([partition])
    r.delete(lease)

    assert reader.catch_up([partition]) == 1
    reader.wait_applied([partition], timeout=1)
    assert rt.consent.receipt(tenant, opt_out.request_id)["status"] == "done"
    state = gate.states([(tenant, "g-1")]).states[(tenant, "g-1")]
    assert gate.decide(state, tenant, "order_placed") is DropReason.OPTED_OUT

    # A replay (the applied offset rewound, as after a crash) changes nothing and never moves it back.
    assert reader.catch_up([partition]) == 0
    rt.consent.mark_applied(s.requests_topic, partition, 0)
    assert rt.consent.applied(s.requests_topic, [partition])[partition] == offset + 1

    # An invalid request goes to the DLQ and is passed over.
    p = Producer({"bootstrap.servers": s.kafka_bootstrap, "partitioner": "murmur2_random"})
    p.produce(s.requests_topic, b'{"type": "erase"}', f"{tenant}/g-1".encode(), partition=partition)
    p.flush(10)
    assert reader.catch_up([partition]) == 1
    assert reader.behind([partition]) == {}
    dlq = read_topic(s.kafka_bootstrap, s.dlq_topic, expect=1, timeout=30)
    assert len(dlq) == 1
    doc = json.loads(dlq[0].value())
    assert doc["reason"] == "invalid_request" and doc["source"]["topic"] == s.requests_topic
    assert (doc["source"]["partition"], doc["source"]["offset"]) == (partition, offset + 1)
    # Keyed: the operator's matcher finds it (the DLQ key of this topic), a plain SHA-256 guess does not.
    payload = b'{"type": "erase"}'
    assert doc["payload_fingerprint"] in reader.dlq.keys.fingerprints("payload", doc["tenant"], payload)
    assert hashlib.sha256(payload).hexdigest() not in json.dumps(doc)
    # It was passed over: the consent state is what the valid request made it.
    assert gate.decide(gate.states([(tenant, "g-1")]).states[(tenant, "g-1")], tenant, "order_placed") is DropReason.OPTED_OUT


def test_erasure_receipt_is_done_only_after_the_aof_rewrite(make_settings):
    s = make_settings()
    tenant = sorted(s.tenants)[0]
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    rt = build_runtime(s, registry, EventProcessor(registry, s.tenants, s.max_event_bytes), Metrics(), "test",
                       lambda: set())
    erase = new_request("erase", tenant, "aof-1", "test")
    pending = rt.requests.handle(erase)  # steps 1-4, as the reader runs them
    assert pending["status"] == "pending"
    assert [st["step"] for st in pending["steps"]] == ["state", "tombstone", "store", "key", "quarantine", "dlq"]
    # A replay now (crash before the offset was stored) does not redo or lose anything.
    assert rt.requests.handle(erase)["status"] == "pending"
    assert rt.requests.finish_pending() == 1
    done = rt.consent.receipt(tenant, erase.request_id)
    assert done["status"] == "done"
    assert [st["step"] for st in done["steps"]] == ["state", "tombstone", "store", "key", "quarantine", "dlq", "aof", "audit"]
    assert done["steps"][6]["aof"] == "rewritten"
    assert rt.requests.finish_pending() == 0
    # Through the reader, the receipt is done when catch_up returns.
    erase2 = new_request("erase", tenant, "aof-2", "test")
    partition, _ = _publish(s, erase2)
    assert rt.request_reader.catch_up([partition]) == 1
    assert rt.consent.receipt(tenant, erase2.request_id)["status"] == "done"
