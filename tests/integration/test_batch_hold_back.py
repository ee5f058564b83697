"""A sink that fails holds the batch back: nothing is acknowledged before both sinks have it.

The worker acknowledges a batch's offsets only when ``BatchPipeline.handle`` returns, so
these tests drive ``handle`` with the real Kafka and Redis behind sinks that fail their
first calls (the tenant topic's producer, then the store), and check that it returns only
after every record is in both, each exactly once in the topic, the store written first.
"""

from __future__ import annotations

import asyncio

import pytest
import redis

from streams.ingest import samples
from streams.ingest.batch import RawRecord
from streams.ingest.processor import EventProcessor
from streams.ingest.producer import encode_event, event_key
from streams.ops.metrics import Metrics
from streams.runtime import build_runtime
from streams.schema.registry import SchemaRegistry
from streams.sinks.exceptions import SinkUnavailable
from streams.sinks.store import StoreReader
from streams.sinks.tenant_keys import split_key
from tests.kafka_read import read_topic

pytestmark = pytest.mark.integration


class FailingFirst:
    """Wraps a sink; its first ``n`` calls of ``method`` raise ``exc`` and record what the other sink
    already had at that moment."""

    def __init__(self, inner, method: str, n: int, exc: BaseException, observe=lambda: None) -> None:
        self.inner, self.method, self.left, self.exc, self.observe = inner, method, n, exc, observe
        self.calls: list[object] = []

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if name != self.method:
            return attr

        async def call(*args, **kwargs):
            self.calls.append(self.observe())
            if self.left > 0:
                self.left -= 1
                raise self.exc
            return await attr(*args, **kwargs)
        return call


def _batch(s, tenant: str, n: int = 6) -> tuple[list[RawRecord], list[str]]:
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    events = [samples.order(tenant, f"hb-{i % 2}") for i in range(n)]
    records = [RawRecord(event_key(e), encode_event(registry, e, "avro"), s.raw_topic, 0, i)
               for i, e in enumerate(events)]
    return records, [str(e["event_id"]) for e in events]


def _runtime(s):
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    metrics = Metrics()
    rt = build_runtime(s, registry, EventProcessor(registry, s.tenants, s.max_event_bytes), metrics, "test",
                       lambda: {0})
    return rt, metrics


def test_tenant_topic_producer_failing_holds_the_batch_until_it_recovers(make_settings):
    s = make_settings(sink_retry_max_seconds=0.2)
    tenant = sorted(s.tenants)[0]
    rt, metrics = _runtime(s)
    records, ids = _batch(s, tenant)
    reader = StoreReader.from_url(s.redis_url)
    flaky = FailingFirst(rt.pipeline.kafka, "deliver_async", 3, SinkUnavailable("broker away"),
                         observe=lambda: sum(reader.get(tenant, i) is not None for i in ids))
    rt.pipeline.kafka = flaky
    result = asyncio.run(rt.pipeline.handle(records))
    assert result.accepted == len(records)
    assert flaky.calls == [len(ids)] * 4  # the store already held the batch at every attempt
    assert metrics.value("streams_sink_retries_total", sink="kafka") == 3
    msgs = read_topic(s.kafka(), s.tenant_topic(tenant), expect=len(ids), timeout=60)
    assert sorted(split_key(m.key())[1] for m in msgs) == sorted(ids)  # each once: failed attempts sent nothing


def test_store_failing_holds_the_batch_and_nothing_reaches_the_topic_before_it(make_settings):
    s = make_settings(sink_retry_max_seconds=0.2)
    tenant = sorted(s.tenants)[0]
    rt, metrics = _runtime(s)
    records, ids = _batch(s, tenant)
    delivered_before: list[int] = []
    original = rt.pipeline.kafka.deliver_async

    async def watch(out, *a, **kw):
        delivered_before.append(len(out))
        return await original(out, *a, **kw)

    rt.pipeline.kafka.deliver_async = watch  # type: ignore[method-assign]
    flaky = FailingFirst(rt.pipeline.store, "write_batch", 2, redis.ConnectionError("redis away"),
                         observe=lambda: len(delivered_before))
    rt.pipeline.store = flaky
    asyncio.run(rt.pipeline.handle(records))
    assert flaky.calls == [0, 0, 0]  # the topic was not written while the store failed
    assert delivered_before == [len(records)]
    assert metrics.value("streams_sink_retries_total", sink="store") == 2
    reader = StoreReader.from_url(s.redis_url)
    assert all(reader.get(tenant, i) is not None for i in ids)
