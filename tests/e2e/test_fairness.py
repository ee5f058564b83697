"""A tenant flooding its raw topic does not starve another tenant (streams.ingest.fairness), through a
worker process on the secure stack. Delivered counts, not timing:

tenant H has a backlog of 20,000 events in its raw topic when the worker starts; once the
worker is working through it, tenant L publishes 50 events. All of L's events must be in L's
topic while most of H's backlog is still waiting (a FIFO over the consumer's queue would put
L's events behind every prefetched event of H), and in the end every event of H is delivered
once: the pauses lost and doubled nothing.
"""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streams.ingest import samples
from streams.ingest.producer import encode_event, event_key
from streams.schema.registry import SchemaRegistry
from streams.tenancy.onboarding import build_service

pytestmark = pytest.mark.e2e

HEAVY = 20_000
LIGHT = 50


def _publish(s, topic: str, tenant: str, n: int, registry: SchemaRegistry, tag: str) -> None:
    p = Producer({**s.kafka(), "linger.ms": 20, "batch.num.messages": 5000, "compression.type": "lz4",
                  "queue.buffering.max.messages": 100_000})
    pool = [samples.order(tenant, f"{tag}{i % 97}") for i in range(200)]
    for i in range(n):
        e = dict(pool[i % len(pool)], event_id=str(uuid.uuid4()))
        p.produce(topic, encode_event(registry, e, "avro"), event_key(e))
        if i % 5000 == 0:
            p.poll(0)
    assert p.flush(60) == 0


class Counts:
    def __init__(self, s) -> None:
        self.s = s
        self.c = Consumer({**s.kafka(), "group.id": f"test-counts-{uuid.uuid4().hex[:8]}", "log_level": 0})

    def __call__(self, tenant: str) -> int:
        topic = self.s.tenant_topic(tenant)
        parts = self.c.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(self.c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts)


def test_a_flooding_tenant_does_not_starve_another(make_secure_settings, start_worker) -> None:
    s = make_secure_settings(batch_size=50)
    svc = build_service(s, "test:fairness")
    heavy, light = f"t{uuid.uuid4().hex[:8]}", f"t{uuid.uuid4().hex[:8]}"
    for t in (heavy, light):
        svc.create(t)
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    _publish(s, s.tenant_raw_topic(heavy), heavy, HEAVY, registry, "h")
    count = Counts(s)

    worker = start_worker(s)
    deadline = time.monotonic() + 90
    while count(heavy) < 500:  # the worker is in the thick of H's backlog
        assert time.monotonic() < deadline, worker.log_text()[-3000:]
        time.sleep(0.1)
    heavy_before = count(heavy)
    _publish(s, s.tenant_raw_topic(light), light, LIGHT, registry, "l")

    deadline = time.monotonic() + 90
    while count(light) < LIGHT:
        assert time.monotonic() < deadline, worker.log_text()[-3000:]
        time.sleep(0.05)
    heavy_then = count(heavy)
    # Measured: L waits for ~120-150 of H's events (the batches in flight and the counting's lag);
    # with one FIFO over the consumer's queue it waited for all 19,500.
    assert heavy_then - heavy_before <= HEAVY // 10, f"L waited for {heavy_then - heavy_before} of H's {HEAVY} events ({heavy_before} done before)"

    deadline = time.monotonic() + 180
    while count(heavy) < HEAVY:
        assert time.monotonic() < deadline, (count(heavy), worker.log_text()[-3000:])
        time.sleep(0.5)
    time.sleep(2)
    assert (count(heavy), count(light)) == (HEAVY, LIGHT)  # nothing lost, nothing doubled
    count.c.close()
