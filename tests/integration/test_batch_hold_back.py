"""A sink that fails holds the batch back: nothing is acknowledged before both sinks have it.

The worker acknowledges a batch's offsets only when ``BatchPipeline.handle`` returns, so
these tests drive ``handle`` with the real Kafka and Redis behind sinks that fail their
first calls (the tenant topic's producer, then the store), and check that it returns only
after every record is in both, the store written first. A producer that fails part-way has
really sent part of the batch: the retry sends the whole batch again, so the topic holds
those records more than once (at least once), and a consumer that keeps the first copy of
each event id sees every event once, in order.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
import redis

from streams.ingest import samples
from streams.ingest.batch import RawRecord
from streams.ingest.producer import encode_event, event_key
from streams.schema.registry import SchemaRegistry
from streams.sinks.exceptions import SinkUnavailable
from streams.sinks.store import StoreReader
from streams.records import split_key
from tests.runtime import fresh_runtime
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


class PartlyDelivering:
    """Wraps the real Kafka sink: its first attempts really deliver (broker-acknowledged) only the
    first ``parts[i]`` records of the batch, then fail as a producer losing the broker mid-batch
    does; later attempts deliver the whole batch. Records what the store held at each attempt."""

    def __init__(self, inner, parts: list[int], observe) -> None:
        self.inner, self.parts, self.observe = inner, list(parts), observe
        self.calls: list[object] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def deliver_async(self, records, *args, **kwargs):
        self.calls.append(self.observe())
        if self.parts:
            n = self.parts.pop(0)
            await self.inner.deliver_async(records[:n], *args, **kwargs)
            raise SinkUnavailable(f"{len(records) - n} records not acknowledged within 30s")
        return await self.inner.deliver_async(records, *args, **kwargs)


def test_producer_failing_part_way_holds_the_batch_and_redelivers_it_whole(make_settings):
    """Two attempts fail after 2 and then 4 of 6 records were really acknowledged; the third
    delivers all. The topic then holds the first two records 3 times, the next two twice and the
    last two once (nothing lost, duplicates exactly from the partial attempts); de-duplicated by
    event id (first copy kept), each event appears once and each subject's events in order."""
    s = make_settings(sink_retry_max_seconds=0.2)
    tenant = sorted(s.tenants)[0]
    rt, metrics = fresh_runtime(s)
    records, ids = _batch(s, tenant)
    reader = StoreReader.from_settings(s)
    flaky = PartlyDelivering(rt.pipeline.kafka, [2, 4],
                             observe=lambda: sum(reader.get(tenant, i) is not None for i in ids))
    rt.pipeline.kafka = flaky
    result = asyncio.run(rt.pipeline.handle(records))
    assert result.accepted == len(records)
    assert flaky.calls == [len(ids)] * 3  # the store already held the batch at every attempt
    assert metrics.value("streams_sink_retries_total", sink="kafka") == 2
    expected = {i: (3 if n < 2 else 2 if n < 4 else 1) for n, i in enumerate(ids)}
    msgs = read_topic(s.kafka(), s.tenant_topic(tenant), expect=sum(expected.values()), timeout=60)
    keys = [split_key(m.key()) for m in sorted(msgs, key=lambda m: (m.partition(), m.offset()))]
    assert Counter(event_id for _, event_id in keys) == expected
    first_copies: dict[str, list[str]] = {}
    seen: set[str] = set()
    for subject, event_id in keys:
        if event_id not in seen:
            seen.add(event_id)
            first_copies.setdefault(subject, []).append(event_id)
    assert seen == set(ids)
    index = {i: n for n, i in enumerate(ids)}
    assert sorted(len(got) for got in first_copies.values()) == [3, 3]  # two subjects, 3 events each
    for subject, got in first_copies.items():  # each subject's events in the batch's order
        assert [index[i] for i in got] == sorted(index[i] for i in got), subject


def test_store_failing_holds_the_batch_and_nothing_reaches_the_topic_before_it(make_settings):
    s = make_settings(sink_retry_max_seconds=0.2)
    tenant = sorted(s.tenants)[0]
    rt, metrics = fresh_runtime(s)
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
    reader = StoreReader.from_settings(s)
    assert all(reader.get(tenant, i) is not None for i in ids)
