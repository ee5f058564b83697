"""The ordering gate against the real broker and Redis: ingest waits for published requests to be applied."""

from __future__ import annotations

import time

import pytest
import redis
from confluent_kafka import Producer

from streams.consent.gate import ConsentGate, RequestsNotApplied, RequestsWatermarks
from streams.consent.requests import new_request
from streams.consent.state import DropReason, Regime, SubjectState
from streams.consent.store import ConsentStore

pytestmark = pytest.mark.integration


def test_gate_waits_until_requests_are_applied(make_settings):
    s = make_settings()
    tenant = sorted(s.tenants)[0]
    store = ConsentStore(redis.Redis.from_url(s.redis_url))
    gate = ConsentGate(store, lambda t, subj: f"p_{subj}", {tenant: Regime.OPT_OUT}, {"order_placed": "analytics"},
                       s.requests_topic, RequestsWatermarks(s.kafka_bootstrap, s.requests_topic))
    gate.wait_applied(timeout=1)  # nothing published yet: nothing to wait for

    req = new_request("opt_out", tenant, "g-1", "test")
    p = Producer({"bootstrap.servers": s.kafka_bootstrap, "partitioner": "murmur2_random"})
    delivered = []
    p.produce(s.requests_topic, req.to_json(), req.key, on_delivery=lambda e, m: delivered.append(m))
    p.flush(10)
    partition, offset = delivered[0].partition(), delivered[0].offset()

    started = time.monotonic()
    with pytest.raises(RequestsNotApplied):
        gate.wait_applied(timeout=0.5)  # published, not applied: ingest must not go on
    assert time.monotonic() - started >= 0.5

    store.put_state(tenant, "p_g-1", SubjectState(opted_out=True))
    store.mark_applied(s.requests_topic, partition, offset + 1)
    gate.wait_applied(timeout=1)
    state = gate.states([(tenant, "g-1")])[(tenant, "g-1")]
    assert gate.decide(state, tenant, "order_placed") is DropReason.OPTED_OUT
    # The applied offset never moves back (a replay after a crash).
    store.mark_applied(s.requests_topic, partition, 0)
    assert store.applied(s.requests_topic, [partition])[partition] == offset + 1
