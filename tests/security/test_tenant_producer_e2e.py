"""A tenant producer claiming another tenant's events, through a running worker on the secure stack.

Tenant A's producer credential may write only A's raw topic. An event there that names
tenant B (or a tenant that does not exist) goes to the DLQ as ``tenant_mismatch``; nothing
reaches B's topic or B's store. A's own events are delivered, also after the worker's and
the producer's sessions have re-authenticated (connections.max.reauth.ms is short on the
test stack).
"""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from streams.dlq.record import decode_dlq
from streams.ingest import samples
from streams.ingest.producer import EventProducer
from streams.settings import sasl_config
from streams.schema.registry import SchemaRegistry
from streams.sinks import store_keys as K
from streams.tenancy.onboarding import build_service
from tests.kafka_read import read_topic

pytestmark = [pytest.mark.e2e, pytest.mark.security]


def test_events_claiming_another_tenant_are_dead_lettered_and_reach_nothing_of_it(make_secure_settings,
                                                                                  start_worker):
    s = make_secure_settings()
    svc = build_service(s, "test:security")
    a, b = f"t{uuid.uuid4().hex[:8]}", f"t{uuid.uuid4().hex[:8]}"
    creds = {t: svc.create(t)["credentials"] for t in (a, b)}
    worker = start_worker(s)
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    prod = creds[a]["producer"]
    p = EventProducer(sasl_config(s.kafka_bootstrap, prod["username"], prod["password"]), prod["topic"], registry)
    own = [samples.signup(a, "s-1"), samples.order(a, "s-2")]
    forged = [samples.signup(b, "s-1"), samples.order(b, "victim"), samples.signup("nosuchtenant", "s-3")]
    for e in own + forged:
        p.send(e, "json" if e is forged[1] else "avro")
    p.flush()
    assert p.acked == len(own) + len(forged) and p.failed == 0

    delivered = read_topic(s.kafka(), s.tenant_topic(a), expect=len(own), timeout=60)
    dlq = [decode_dlq(m.value()) for m in read_topic(s.kafka(), s.dlq_topic, expect=len(forged), timeout=60)]
    assert len({m.key() for m in delivered}) == len(own)
    assert sorted(d["reason"] for d in dlq) == ["tenant_mismatch"] * len(forged)
    assert {d["source"]["topic"] for d in dlq} == {s.tenant_raw_topic(a)}
    assert all(d["tenant"] is None for d in dlq)  # not attributed to the tenant it claimed

    # Nothing of B: its topic is empty and its keyspace holds no event or index.
    assert read_topic(s.kafka(), s.tenant_topic(b), timeout=10, idle=3) == []
    r = redis.Redis.from_url(s.redis_url)
    assert not [k for k in r.scan_iter(match=f"{K.store_prefix(b)}*") if b":ev:" in k or b":subj:" in k]
    # Control for that search: A's keyspace has its two events.
    assert len([k for k in r.scan_iter(match=f"{K.store_prefix(a)}ev:*")]) == len(own)

    # Past two re-authentication periods the worker (aiokafka and librdkafka sessions) and the
    # producer still work: a later event of A is delivered.
    time.sleep(2 * s.kafka_reauth_ms / 1000 + 1)
    later = samples.support(a, "s-4")
    p.send(later)
    p.flush()
    assert p.failed == 0
    after = read_topic(s.kafka(), s.tenant_topic(a), expect=len(own) + 1, timeout=60)
    assert len({m.key() for m in after}) == len(own) + 1, worker.log_text()[-3000:]
    assert worker.traceback_excerpt() is None, worker.traceback_excerpt()
