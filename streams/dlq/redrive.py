"""Redrive: send quarantined originals (``streams.dlq.quarantine``) back through the pipeline.

After a fix (a schema deployed, a tenant onboarded late, a damaged key restored) an operator runs
``streams dlq redrive --reason R``. Each matching quarantined record is opened and its original
key and value produced to the raw topic again, as a producer would; the worker then validates
it like any other event (rejected again, it gets a new DLQ record and quarantine copy).

What is never redriven, and counted as skipped with why:

* ``erased``: the subject is erased or suppressed (its consent state says so), or its copy can
  no longer be opened because the erasure destroyed its key or its pseudonym's way back;
* ``expired``: sealed with a quarantine key destroyed at the end of the retention;
* ``tenant_unknown``: its tenant is (still, or again) not onboarded: it would only be rejected again;
* ``already_delivered``: the event id is in the store already (a redrive is idempotent by event id);
* ``in_flight``: the same event was redriven in the last ``GUARD_MS`` and may not be processed yet
  (two redrives at once, or one repeated quickly, send each event once).

Rate limited (``rate`` records/s), with progress and a summary; the run is audited (who, what
filter, the counts), and ``dry_run`` opens and checks everything but produces nothing.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Collection

import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from streams.connections import consumer_config, producer_config
from streams.consent.store import ConsentStore
from streams.dlq.quarantine import Opened, Quarantine, QuarantineError, split_record_key
from streams.keyspace import redrive_guard_key
from streams.settings import Settings

log = logging.getLogger(__name__)

GUARD_MS = 15 * 60 * 1000
REDRIVEN_HEADER = "redriven-from"


@dataclass
class RedriveFilter:
    reason: str
    tenant: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None

    def matches(self, env: dict[str, Any]) -> bool:
        if env.get("reason") != self.reason:
            return False
        if self.tenant is not None and self.tenant not in (env.get("tenant"), env.get("claimed_tenant")):
            return False
        at = int(env.get("quarantined_at_ms") or 0)
        if self.since_ms is not None and at < self.since_ms:
            return False
        return self.until_ms is None or at < self.until_ms


@dataclass
class RedriveSummary:
    read: int = 0
    matched: int = 0
    redriven: int = 0
    skipped: Counter = field(default_factory=Counter)
    dry_run: bool = False
    #: (topic, partition, offset, tenant, event id) of each record produced, for a caller that waits
    produced: list[tuple[str, int, int, str | None, str | None]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"read": self.read, "matched": self.matched, "redriven": self.redriven,
                "skipped": dict(sorted(self.skipped.items())), "dry_run": self.dry_run}


class Redrive:
    """One redrive run over the quarantine topic as it is when the run starts."""

    def __init__(self, settings: Settings, quarantine: Quarantine, client: redis.Redis, consent: ConsentStore,
                 pseudonyms: Callable[[str, str], str], resolve_subject: Callable[[str, str], str | None],
                 tenants: Collection[str], delivered: Callable[[str, str], bool]) -> None:
        """``resolve_subject(tenant, pseudonym)``: the subject behind a pseudonym (``DlqSubjects.resolve``),
        None once erased; ``delivered(tenant, event_id)``: whether the store holds the event."""
        self.s = settings
        self.quarantine = quarantine
        self.r = client
        self.consent = consent
        self.pseudonyms = pseudonyms
        self.resolve_subject = resolve_subject
        self.tenants = tenants
        self.delivered = delivered

    def _records(self) -> Any:
        """Every record of the quarantine topic up to its end when the run starts."""
        topic = self.quarantine.topic
        consumer = Consumer(consumer_config(self.s.kafka(), "streams-redrive", {"auto.offset.reset": "earliest"}))
        try:
            md = consumer.list_topics(topic, timeout=10).topics[topic]
            if md.error is not None:
                raise RuntimeError(f"quarantine topic {topic}: {md.error.str()}")
            ends = {}
            for p in md.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                if high > low:
                    ends[p] = (low, high)
            if not ends:
                return
            consumer.assign([TopicPartition(topic, p, low) for p, (low, _) in ends.items()])
            left = {p: high for p, (_, high) in ends.items()}
            idle_until = time.monotonic() + 30
            while left:
                msgs = consumer.consume(500, 1.0)
                if not msgs and time.monotonic() > idle_until:
                    raise RuntimeError(f"could not read {topic} to its end (partitions {sorted(left)} stalled)")
                for m in msgs:
                    if m.error():
                        continue
                    idle_until = time.monotonic() + 30
                    if m.offset() + 1 >= left.get(m.partition(), 0):
                        left.pop(m.partition(), None)
                    yield m
        finally:
            consumer.close()

    def _open(self, env: dict[str, Any]) -> tuple[Opened | None, str | None]:
        """The opened record, or why it is skipped."""
        subject = None
        if env.get("sealed_with") == "subject":
            subject = self.resolve_subject(env["subject_tenant"], env["subject"]) if env.get("subject") else None
            if subject is None:
                return None, "erased"
        try:
            return self.quarantine.open(env, subject), None
        except QuarantineError:
            return None, "erased" if env.get("sealed_with") == "subject" else "expired"

    def _skip_reason(self, opened: Opened) -> tuple[str | None, str | None, str | None]:
        """(why it is skipped or None, its tenant, its event id or ref)."""
        named = split_record_key(opened.key)
        tenant = named[0] if named else opened.envelope.get("tenant")
        if tenant is None or tenant not in self.tenants:
            return "tenant_unknown", tenant, None
        if named is not None:
            state = self.consent.state(tenant, self.pseudonyms(tenant, named[1]))
            if state.erased or state.suppressed:
                return "erased", tenant, None
        event_id = opened.event_id or opened.ref
        if opened.event_id and self.delivered(tenant, opened.event_id):
            return "already_delivered", tenant, event_id
        return None, tenant, event_id

    def dlq_ends(self) -> dict[int, int]:
        consumer = Consumer(consumer_config(self.s.kafka(), "streams-redrive"))
        try:
            md = consumer.list_topics(self.s.dlq_topic, timeout=10).topics[self.s.dlq_topic]
            return {p: consumer.get_watermark_offsets(TopicPartition(self.s.dlq_topic, p), timeout=10)[1]
                    for p in md.partitions}
        finally:
            consumer.close()

    def outcomes(self, summary: RedriveSummary, dlq_from: dict[int, int], timeout: float) -> dict[str, Any]:
        """Wait up to ``timeout`` s for the redriven records' fate: delivered (in the store) or
        rejected again (a DLQ record with their source), by reason; the rest is ``unaccounted``."""
        pending = {(t, p, o): (tenant, eid) for t, p, o, tenant, eid in summary.produced}
        delivered = 0
        again: Counter = Counter()
        consumer = Consumer(consumer_config(self.s.kafka(), "streams-redrive"))
        consumer.assign([TopicPartition(self.s.dlq_topic, p, o) for p, o in dlq_from.items()])
        deadline = time.monotonic() + timeout
        try:
            while pending and time.monotonic() < deadline:
                for m in consumer.consume(500, 0.5):
                    if m.error():
                        continue
                    doc = json.loads(m.value())
                    src = doc.get("source") or {}
                    hit = pending.pop((src.get("topic"), src.get("partition"), src.get("offset")), None)
                    if hit is not None:
                        again[doc.get("reason")] += 1
                for ref, (tenant, eid) in list(pending.items()):
                    if tenant and eid and self.delivered(tenant, eid):
                        pending.pop(ref)
                        delivered += 1
        finally:
            consumer.close()
        return {"delivered": delivered, "rejected_again": dict(sorted(again.items())), "unaccounted": len(pending)}

    def run(self, flt: RedriveFilter, dry_run: bool = False, rate: float | None = None,
            progress: Callable[[RedriveSummary], None] | None = None) -> RedriveSummary:
        out = RedriveSummary(dry_run=dry_run)
        # The pipeline's producer settings: Kafka's default partitioner (murmur2), so a redriven event
        # lands on the partition of its subject's privacy requests, as a producer's original did.
        producer = None if dry_run else Producer(producer_config(self.s.kafka()))
        started = time.monotonic()
        last_progress = started

        def produced(tenant: str | None, event_id: str | None) -> Callable[[Any, Any], None]:
            def report(err: Any, msg: Any) -> None:
                if err is None:
                    out.produced.append((msg.topic(), msg.partition(), msg.offset(), tenant, event_id))
            return report

        for m in self._records():
            out.read += 1
            try:
                env = json.loads(m.value())
            except ValueError:
                out.skipped["unreadable"] += 1
                continue
            if not flt.matches(env):
                continue
            out.matched += 1
            opened, why = self._open(env)
            tenant = event_id = None
            if opened is not None:
                why, tenant, event_id = self._skip_reason(opened)
            if why is None and not dry_run:
                # Claimed before producing: a second redrive (or this one repeated) sends it once.
                if not self.r.set(redrive_guard_key(tenant, event_id), "1", nx=True, px=GUARD_MS):
                    why = "in_flight"
            if why is not None:
                out.skipped[why] += 1
            else:
                assert opened is not None
                if producer is not None:
                    producer.produce(self.s.raw_topic, opened.value, opened.key,
                                     on_delivery=produced(tenant, opened.event_id),
                                     headers=[(REDRIVEN_HEADER, opened.ref.encode())])
                    producer.poll(0)
                out.redriven += 1
                if rate:
                    wait = started + out.redriven / rate - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
            if progress is not None and time.monotonic() - last_progress >= 1.0:
                progress(out)
                last_progress = time.monotonic()
        if producer is not None and producer.flush(60) != 0:
            raise RuntimeError("the broker did not acknowledge every redriven record in 60 s")
        return out
