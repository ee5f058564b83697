"""The batch's side of the erasure race (streams/erasure/fence.py), with fake sinks: events the
store refused are consent drops (counted, audited, never produced), the batch leaves the in-flight
sets it entered, and a batch whose lease lapsed tombstones its events of subjects erased meanwhile."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, Iterable

from streams.consent.gate import ConsentView
from streams.consent.state import SubjectState
from streams.ingest import samples
from streams.ingest.batch import BatchPipeline, RawRecord
from streams.ingest.processor import EventProcessor
from streams.records import Accepted
from streams.ingest.producer import encode_event, event_key
from streams.ops.metrics import Metrics
from streams.schema.registry import SchemaRegistry
from streams.settings import Settings
from streams.sinks.store import StoreWrite
from streams.records import split_key

REPO = Path(__file__).resolve().parents[2]


class Keys:
    def subject_keys(self, tenant: str, subjects: Iterable[str], create: bool = True) -> dict[str, bytes]:
        return {s: os.urandom(64) for s in subjects}


class Kafka:
    def __init__(self) -> None:
        self.records: list[Any] = []

    async def deliver_async(self, records: list[Any], timeout: float = 30.0) -> None:
        self.records.extend(records)


class Store:
    """Refuses the events of ``erased`` subjects (as the script does once their marker is set)."""

    def __init__(self, erased: set[str], lapsed: bool = False) -> None:
        self.erased = erased
        self.lapsed = lapsed
        self.leave: Any = None
        self.stats: list[Any] = []

    async def write_batch(self, events: Iterable[Accepted], batch_id: str = "") -> StoreWrite:
        events = list(events)
        refused = tuple(a for a in events if a.subject in self.erased)
        return StoreWrite(len(events) - len(refused), refused, frozenset(), frozenset(a.tenant for a in events))

    async def add_stats(self, counts: dict[str, dict[str, int]], leave: Any = None) -> frozenset[str]:
        self.stats.append(counts)
        self.leave = leave
        return frozenset(leave[1]) if self.lapsed else frozenset()


class Gate:
    """Allows every event at the gate; ``states`` answers what the consent store says now."""

    def __init__(self) -> None:
        self.erased: set[str] = set()

    def states(self, subjects: Iterable[tuple[str, str]]) -> ConsentView:
        return ConsentView({(t, s): SubjectState(erased=s in self.erased) for t, s in subjects})

    def decide(self, state: SubjectState, tenant: str, event_type: str) -> Any:
        return None


class Audit:
    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []

    def append(self, action: str, tenant: str | None, subject_pseudonym: str | None, reason: str,
               details: dict[str, Any] | None = None) -> None:
        self.records.append((action, details or {}))


def _records(n_each: int, subjects: list[str]) -> tuple[list[RawRecord], EventProcessor]:
    registry = SchemaRegistry.load_dir(REPO / "schemas")
    proc = EventProcessor(registry, ["acme"], 256 * 1024)
    out = []
    for i in range(n_each):
        for s in subjects:
            e = samples.order("acme", s)
            out.append(RawRecord(event_key(e), encode_event(registry, e, "avro"), "events.raw", 0, len(out)))
    return out, proc


def test_refused_events_are_erased_drops_never_produced_and_audited():
    records, proc = _records(3, ["gone", "kept"])
    store, kafka, audit, metrics = Store({"gone"}), Kafka(), Audit(), Metrics()
    p = BatchPipeline(Settings(), proc, kafka, store, Keys(), metrics, gate=Gate(), audit=audit)  # type: ignore[arg-type]
    result = asyncio.run(p.handle(records))
    assert result.accepted == 3 and result.dropped == {"erased": 3}
    produced = {split_key(r.key)[0] for r in kafka.records}
    assert produced == {"kept"}, produced
    assert store.stats == [{"acme": {"processed": 6, "delivered": 3, "dropped_erased": 3}}]
    drops = [d for a, d in audit.records if a == "consent.drop"]
    assert drops and drops[0]["dropped_erased"] == 3 and len(drops[0]["event_ids"].split(",")) == 3
    assert store.leave[1] == {"acme"} and store.leave[0]  # left the in-flight set it entered
    assert metrics.value("streams_store_refused_erased_total") == 3
    assert not metrics.value("streams_inflight_lease_lapsed_total")


def test_a_batch_whose_lease_lapsed_tombstones_its_events_of_subjects_erased_meanwhile():
    records, proc = _records(2, ["gone", "kept"])
    gate, kafka, metrics = Gate(), Kafka(), Metrics()
    store = Store(set(), lapsed=True)

    async def deliver(records_: list[Any], timeout: float = 30.0) -> None:
        kafka.records.extend(records_)
        gate.erased.add("gone")  # an erasure ran while the batch was late (its fence gave up)

    kafka.deliver_async = deliver  # type: ignore[method-assign]
    p = BatchPipeline(Settings(), proc, kafka, store, Keys(), metrics, gate=gate)  # type: ignore[arg-type]
    asyncio.run(p.handle(records))
    last: dict[str, Any] = {}
    for r in kafka.records:
        last[r.key] = r.value
    tomb = {split_key(k)[0] for k, v in last.items() if v is None}
    live = {split_key(k)[0] for k, v in last.items() if v is not None}
    assert tomb == {"gone"} and live == {"kept"}, (tomb, live)
    assert metrics.value("streams_erasure_late_tombstones_total") == 2
    assert metrics.value("streams_inflight_lease_lapsed_total") == 1
