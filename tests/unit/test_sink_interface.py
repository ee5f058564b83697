"""The sink interface (streams/sinks/base.py) with a test-only sink and fake clients: the worker
writes every sink in the declared order (the store first, refusals honoured before later sinks),
a sink must say how it erases and drops, and the list is checked."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streams.ingest.batch import BatchPipeline
from streams.ops.metrics import Metrics
from streams.settings import Settings
from streams.sinks import registry
from streams.sinks.base import Batch, Sink, SubjectErasure, check_sinks
from streams.sinks.registry import SinkDeps, build_sinks
from streams.sinks.store import StoreSink
from streams.sinks.tenant_topic import TenantTopicSink
from tests.recording_sink import RecordingSink
from tests.unit.test_batch_erasure_race import Audit, Gate, Kafka, Keys, Store, _records


class LoggingStore(Store):
    def __init__(self, log: list[str], erased: set[str]) -> None:
        super().__init__(erased)
        self.log = log

    async def write_batch(self, events: Any, batch_id: str = "") -> Any:
        self.log.append("store.write")
        return await super().write_batch(events, batch_id)


class LoggingKafka(Kafka):
    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    async def deliver_async(self, records: list[Any], timeout: float = 30.0) -> None:
        self.log.append("kafka.write")
        await super().deliver_async(records, timeout)


def _pipeline(log: list[str], erased: set[str] = frozenset()) -> tuple[BatchPipeline, RecordingSink, Any]:
    settings = Settings()
    store, kafka, extra = LoggingStore(log, set(erased)), LoggingKafka(log), RecordingSink(log)
    records, proc = _records(2, ["gone", "kept"])
    sinks = [StoreSink(store), TenantTopicSink(settings, kafka), extra]
    p = BatchPipeline(settings, proc, None, None, Keys(), Metrics(), gate=Gate(), audit=Audit(),  # type: ignore[arg-type]
                      sinks=sinks)
    return p, extra, (records, kafka)


def test_every_sink_gets_the_batch_in_write_order_the_store_first():
    log: list[str] = []
    p, extra, (records, kafka) = _pipeline(log)
    result = asyncio.run(p.handle(records))
    assert result.accepted == 4
    assert log == ["store.write", "kafka.write", "recording.write"]
    assert {(t, s) for t, s, _ in extra.events} == {("acme", "gone"), ("acme", "kept")}
    assert len(extra.batches) == 1 and extra.batches[0]  # the batch id the store registered


def test_a_later_sink_never_gets_what_the_store_refused():
    log: list[str] = []
    p, extra, (records, kafka) = _pipeline(log, erased={"gone"})
    result = asyncio.run(p.handle(records))
    assert result.dropped == {"erased": 2}
    assert {s for _, s, _ in extra.events} == {"kept"}


def test_the_pipeline_keeps_its_store_and_producer_replaceable():
    # Tests swap a flaky producer or writer in after the runtime is built: it is the sink's.
    log: list[str] = []
    p, _, _ = _pipeline(log)
    other = Kafka()
    p.kafka = other  # type: ignore[assignment]
    assert p.topic.producer is other and p.kafka is other


def test_a_sink_must_say_how_it_erases_and_drops():
    class WritesOnly(Sink):
        name = erase_step = drop_step = "writes-only"

        async def write(self, batch: Batch) -> None:
            return None

    with pytest.raises(TypeError, match="erase_subject"):
        WritesOnly()  # type: ignore[abstract]


def test_the_sink_list_starts_with_the_index_and_names_each_step_once():
    store, topic = StoreSink(None), TenantTopicSink(Settings(), None)
    check_sinks([store, topic, RecordingSink()])
    with pytest.raises(ValueError, match="subject index"):
        check_sinks([topic, store])
    with pytest.raises(ValueError, match="erase_step"):
        check_sinks([store, topic, RecordingSink(), RecordingSink()])


def test_the_registry_builds_the_two_sinks_then_registered_ones(monkeypatch):
    extra = RecordingSink()
    monkeypatch.setattr(registry, "SINKS", [*registry.SINKS, lambda deps: extra])
    sinks = build_sinks(SinkDeps(Settings()))
    assert [type(s) for s in sinks] == [StoreSink, TenantTopicSink, RecordingSink] and sinks[2] is extra
    # Receipt step names of the built-in sinks, which receipts, tests and the README rely on.
    assert [(s.erase_step, s.drop_step) for s in sinks[:2]] == [("store", "store"), ("tombstone", "topics")]


def test_the_recording_sink_erases_and_drops_what_it_holds():
    sink = RecordingSink()
    sink.events = {("acme", "u1", "e1"), ("acme", "u2", "e2"), ("globex", "u1", "e3")}
    done = sink.erase_subject(SubjectErasure("r1", "acme", "u1", ("e1",)))
    assert done == {"events": 1, "ids_from_index": 1} and "u1" not in str(done)
    assert sink.drop_tenant("acme") == {"events": 1}
    assert sink.events == {("globex", "u1", "e3")}


def test_a_late_batch_erases_its_events_of_subjects_erased_meanwhile_from_every_later_sink():
    # The batch's lease lapsed (the erasure stopped waiting for it and erased every sink first):
    # the batch then erases those subjects again in the sinks after the store, not only the topic.
    log: list[str] = []
    p, extra, (records, kafka) = _pipeline(log)
    p.index.writer.lapsed = True
    gate = p.gate

    async def deliver(records_: list[Any], timeout: float = 30.0) -> None:
        kafka.records.extend(records_)
        gate.erased.add("gone")

    kafka.deliver_async = deliver  # type: ignore[method-assign]
    asyncio.run(p.handle(records))
    assert [(e.tenant, e.subject, len(e.event_ids)) for e in extra.erasures] == [("acme", "gone", 2)]
    assert {s for _, s, _ in extra.events} == {"kept"}
