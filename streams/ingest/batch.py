"""One batch of raw records through the pipeline: validate, consent, transform, deliver, store, then ack.

The worker calls ``BatchPipeline.handle`` with each batch Faust gives it and
acknowledges the batch's offsets after it returns. ``handle`` returns only
when every record is in its tenant topic and the store, in the DLQ, or
counted and audited as a consent drop. While a dependency is down it retries
with back-off instead of raising, because Faust's ``take_events``
acknowledges a batch even when the consumer raises.

Steps: validate every record (pure); wait until privacy requests published so
far are applied (order across the two topics); under the worker's privacy
lock, read the batch's consent states, drop what is not allowed, fetch the
remaining subjects' keys, transform, then write every sink in order
(``streams.sinks.base``: the store, which is the subject index, first; then the
tenant topics with the DLQ; then any other) and audit the drops.

The privacy lock orders only this worker's batches and requests. Against an
erasure applied by another worker meanwhile (``streams.erasure.fence``): the
store write refuses subjects erased since the gate (those events become consent
drops and are not produced) and registers the batch as in flight until its topic
write is acknowledged, so the erasure's tombstones come after its events.

Long because (~500 lines) the phases of ``handle`` share the pipeline's state (lock, sinks,
in-flight batch ids, hold-back) and their order is the point: kept together so it can be read
top to bottom.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import logging
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Iterator, Protocol, Sequence, TypeVar

from streams.erasure.reader import PrivacyRequestReader
from streams.consent.gate import ConsentGate
from streams.consent.state import DropReason
from streams.dlq.reasons import Reason
from streams.dlq.quarantine import Quarantine
from streams.dlq.record import DlqSealer, default_sealer
from streams.ingest.processor import EventProcessor
from streams.records import Accepted, Dropped, Rejected, SourceRef, Validated
from streams.ops.failpoints import failpoint_async
from streams.ops import metric_catalogue as M
from streams.ops.metrics import Metrics
from streams.ops.retry import hold_back
from streams.privacy.exceptions import TenantDeleted, TenantKeyDamaged
from streams.privacy.transforms import SubjectCipher
from streams.settings import Settings
from streams.sinks.base import Batch, Sink, SubjectErasure, Written, check_sinks
from streams.sinks.exceptions import TenantTopicsMissing
from streams.sinks.kafka_sink import KafkaSink, OutRecord
from streams.sinks.store import StoreSink, StoreWriter
from streams.sinks.tenant_topic import TenantTopicSink

log = logging.getLogger(__name__)

DELETED_IN_FLIGHT = "tenant deleted while the event was in flight"
TOPIC_MISSING = "the tenant's topic does not exist"
TENANT_KEY_DAMAGED = "the tenant's key is damaged"
SUBJECT_KEY_DAMAGED = "the subject's key record is damaged"
T = TypeVar("T")
DROP_IDS_PER_RECORD = 25

# The stage times of the batch the current task is handling (``BatchPipeline.handle``): a stage
# entered twice in one batch (waiting for privacy requests before and under the lock) is summed,
# so each batch observes each stage once. A context variable, not an attribute: the ingest agent
# and the tenant raw topics' task run ``handle`` at once.
_STAGES: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar("streams_batch_stages",
                                                                                  default=None)


@contextlib.contextmanager
def _stage(name: str) -> Iterator[None]:
    """Time a stage of the current batch (nothing outside ``handle``)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        stages = _STAGES.get()
        if stages is not None:
            stages[name] = stages.get(name, 0.0) + time.perf_counter() - started


def _sources(records: Sequence["RawRecord"]) -> str:
    """The batch's topic partitions (``topic[p]``), for a failpoint's log line: no record content."""
    return " ".join(sorted({f"{r.topic}[{r.partition}]" for r in records}))


@dataclass(frozen=True)
class RawRecord:
    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None


@dataclass
class BatchResult:
    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)
    attempts: int = 1


class SubjectKeySource(Protocol):
    """Where subject keys come from (``streams.privacy.keys.KeyStore``): get-or-create, per tenant.

    Raises ``TenantKeyDamaged`` for a fault of that tenant's key records alone (``subjects``: only
    those subjects'); anything in ``streams.ops.retry.TRANSIENT`` for a fault of the system.
    """

    def subject_keys(self, tenant: str, subjects: Iterable[str], create: bool = True) -> dict[str, bytes]: ...


class DropAudit(Protocol):
    def append(self, action: str, tenant: str | None, subject_pseudonym: str | None, reason: str,
               details: dict[str, Any] | None = None) -> Any: ...


class BatchPipeline:
    def __init__(self, settings: Settings, processor: EventProcessor, kafka: KafkaSink, store: StoreWriter,  # noqa: PLR0913
                 keys: SubjectKeySource, metrics: Metrics | None = None, gate: ConsentGate | None = None,
                 audit: DropAudit | None = None, lock: asyncio.Lock | None = None,
                 request_reader: PrivacyRequestReader | None = None,
                 own_partitions: Callable[[], set[int]] | None = None,
                 dlq: DlqSealer | None = None, sinks: Sequence[Sink] | None = None,
                 quarantine: Quarantine | None = None) -> None:
        """``sinks``: every sink in write order (``streams.sinks.registry.build_sinks``); without
        it, the store and the tenant topics made of ``store`` and ``kafka`` (tests)."""
        self.settings = settings
        self.processor = processor
        self.sinks: list[Sink] = list(sinks) if sinks is not None else [
            StoreSink(store), TenantTopicSink(settings, kafka)]
        check_sinks(self.sinks)
        # The two sinks the batch's order involves by name: the index (in-flight registration,
        # refusals, stats) and the tenant topics (topic check before writing, late tombstones).
        if not isinstance(self.sinks[0], StoreSink):
            raise ValueError("the first sink must be the store (the subject index and in-flight fence)")
        self.index: StoreSink = self.sinks[0]
        self.topic: TenantTopicSink = next(s for s in self.sinks if isinstance(s, TenantTopicSink))
        self.keys = keys
        self.metrics = metrics or Metrics()
        self.gate = gate
        self.audit = audit
        self.lock = lock
        self.request_reader = request_reader
        self.own_partitions = own_partitions or (lambda: set())
        # DLQ records: keyed fingerprints and pseudonyms (an in-process key when none is given).
        self.dlq = dlq or default_sealer()
        # Sealed originals of the rejections a fix could rescue, for a redrive (none without it).
        self.quarantine = quarantine
        # Batch ids for the in-flight fence (streams.erasure.fence): unique per process and batch.
        self._token = uuid.uuid4().hex[:12]
        self._seq = itertools.count(1)

    @property
    def kafka(self) -> KafkaSink:
        """The producer of the tenant-topic sink (replaceable: tests put a flaky one in)."""
        return self.topic.producer

    @kafka.setter
    def kafka(self, producer: KafkaSink) -> None:
        self.topic.producer = producer

    @property
    def store(self) -> StoreWriter:
        """The writer of the store sink (replaceable: tests put a flaky one in)."""
        return self.index.writer

    @store.setter
    def store(self, writer: StoreWriter) -> None:
        self.index.writer = writer

    async def _hold_back(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        return await hold_back(what, fn, self.metrics, self.settings.sink_retry_max_seconds)

    async def _thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    def validate(self, records: Sequence[RawRecord]) -> list[Validated | Rejected]:
        return [self.processor.validate(r.key, r.value, SourceRef(r.topic, r.partition, r.offset, r.timestamp_ms))
                for r in records]

    async def outcomes(self, records: Sequence[RawRecord],
                       validated: list[Validated | Rejected] | None = None) -> list[Accepted | Rejected | Dropped]:
        """Gate on consent, fetch keys, transform (validating first if not done). Call under the privacy lock."""
        if validated is None:
            validated = self.validate(records)
        subjects = {(v.tenant, v.subject) for v in validated if isinstance(v, Validated)}
        drops: dict[int, DropReason] = {}
        unavailable: dict[str, str] = {}  # tenant -> why its consent cannot be decided (streams.consent.gate)
        if self.gate is not None and subjects:
            with _stage("consent"):
                view = await self._hold_back("consent", lambda: self._thread(self.gate.states, subjects))
            unavailable = view.unavailable
            for i, v in enumerate(validated):
                if isinstance(v, Validated) and v.tenant not in unavailable:
                    reason = self.gate.decide(view.states[(v.tenant, v.subject)], v.tenant, v.raw_entry.event_type)
                    if reason is not None:
                        drops[i] = reason
        wanted: dict[str, set[str]] = defaultdict(set)
        for i, v in enumerate(validated):
            if isinstance(v, Validated) and i not in drops and v.tenant not in unavailable:
                wanted[v.tenant].add(v.subject)
        with _stage("keys"):
            ciphers, failed, damaged = await self._ciphers(wanted)
        with _stage("transform"):
            return self._finish_all(validated, drops, unavailable, ciphers, failed, damaged)

    def _finish_all(self, validated: list[Validated | Rejected], drops: dict[int, DropReason],
                    unavailable: dict[str, str], ciphers: dict[tuple[str, str], SubjectCipher], failed: dict[str, tuple[Reason, str]],
                    damaged: set[tuple[str, str]]) -> list[Accepted | Rejected | Dropped]:
        """Each validated event's outcome: dropped, set aside (``unavailable``: tenants whose consent
        cannot be decided), or transformed with its subject's cipher."""
        now_ms = int(time.time() * 1000)
        out: list[Accepted | Rejected | Dropped] = []
        for i, v in enumerate(validated):
            if not isinstance(v, Validated):
                out.append(v)
            elif i in drops:
                out.append(Dropped(v.tenant, v.event_id, v.raw_entry.event_type, drops[i].value, v.source))
            elif v.tenant in unavailable:
                self._count_isolated(v.tenant, Reason.KEY_ERROR)
                out.append(self.processor.reject_validated(v, Reason.KEY_ERROR, unavailable[v.tenant]))
            elif v.tenant in failed:
                reason, detail = failed[v.tenant]
                if reason is Reason.KEY_ERROR:
                    self._count_isolated(v.tenant, reason)
                out.append(self.processor.reject_validated(v, reason, detail))
            elif (v.tenant, v.subject) in damaged:
                self._count_isolated(v.tenant, Reason.KEY_ERROR)
                out.append(self.processor.reject_validated(v, Reason.KEY_ERROR, SUBJECT_KEY_DAMAGED))
            elif (v.tenant, v.subject) not in ciphers:  # a key source that left a subject out
                out.append(self.processor.reject_validated(v, Reason.PROCESSING_ERROR, "no subject key returned"))
            else:
                out.append(self.processor.finish(v, ciphers[(v.tenant, v.subject)], now_ms))
        return out

    async def _ciphers(self, wanted: dict[str, set[str]]) -> tuple[
            dict[tuple[str, str], SubjectCipher], dict[str, tuple[Reason, str]], set[tuple[str, str]]]:
        """The subject ciphers; the tenants whose events cannot get one (reason, detail); and the
        (tenant, subject) pairs whose own key record is damaged.

        Transient faults (Redis down, the master key unusable) hold the batch back; a fault of one
        tenant's key records (``TenantKeyDamaged``) sets only that tenant's events, or only the
        damaged subjects' events, aside (``key_error``)."""
        ciphers: dict[tuple[str, str], SubjectCipher] = {}
        failed: dict[str, tuple[Reason, str]] = {}
        damaged: set[tuple[str, str]] = set()
        for tenant, subjects in wanted.items():
            pending = set(subjects)
            keys: dict[str, bytes] = {}
            while pending:
                try:
                    keys = await self._hold_back(
                        "keys", lambda t=tenant, s=frozenset(pending): self._thread(self.keys.subject_keys, t, s))
                    break
                except TenantDeleted:  # deleted while the batch was in flight: no key is made for it again
                    failed[tenant] = (Reason.UNKNOWN_TENANT, DELETED_IN_FLIGHT)
                except TenantKeyDamaged as exc:
                    bad = exc.subjects & pending
                    if bad:  # only these subjects' records: the tenant's other subjects go on
                        log.error("key records of %d subject(s) of tenant %s are damaged; their events go to "
                                  "the DLQ (key_error)", len(bad), tenant)
                        damaged |= {(tenant, s) for s in bad}
                        pending -= bad
                        continue
                    log.error("the key of tenant %s is damaged; its events go to the DLQ (key_error)", tenant)
                    failed[tenant] = (Reason.KEY_ERROR, TENANT_KEY_DAMAGED)
                except Exception as exc:  # not transient: these events go to the DLQ, the rest goes on
                    log.error("subject keys of tenant %s unusable: %s", tenant, type(exc).__name__)
                    failed[tenant] = (Reason.PROCESSING_ERROR, f"{type(exc).__name__} getting the subject key")
                keys = {}
                break
            for subject, key in keys.items():
                ciphers[(tenant, subject)] = SubjectCipher(key)
        return ciphers, failed, damaged

    def _count_isolated(self, tenant: str, reason: Reason) -> None:
        self.metrics.inc(M.TENANT_ISOLATED, tenant=tenant, reason=reason.value)

    def out_records(self, outcomes: Sequence[Accepted | Rejected | Dropped],
                    dlq_values: Sequence[bytes] | None = None, now_ms: int | None = None) -> list[OutRecord]:
        """The records to produce: accepted ones to their tenant topic, rejected ones to the DLQ.

        ``dlq_values``: the rejections' DLQ records in order (``DlqSealer.encode_batch``), else made
        here, every one stamped ``rejected_at_ms=now_ms`` (default: the clock, read once).
        """
        if now_ms is None:
            now_ms = int(time.time() * 1000)
        if dlq_values is None:
            dlq_values = self.dlq.encode_batch([o for o in outcomes if isinstance(o, Rejected)], now_ms)
        return self.topic.records(outcomes, dlq_values)

    @staticmethod
    def tenant_stats(outcomes: Sequence[Accepted | Rejected | Dropped]) -> dict[str, dict[str, int]]:
        stats: dict[str, Counter] = defaultdict(Counter)
        for o in outcomes:
            if o.tenant is None:
                continue  # not attributable to a tenant (no valid tenant id)
            c = stats[o.tenant]
            c["processed"] += 1
            if isinstance(o, Accepted):
                c["delivered"] += 1
            elif isinstance(o, Dropped):
                c[f"dropped_{o.reason}"] += 1
            else:
                c[f"dlq_{o.reason.value}"] += 1
        return {t: dict(c) for t, c in stats.items()}

    def _audit_drops(self, dropped: list[Dropped]) -> None:
        by_tenant: dict[str, list[Dropped]] = defaultdict(list)
        for d in dropped:
            by_tenant[d.tenant].append(d)
        for tenant, ds in by_tenant.items():
            # An audit value holds at most 1000 characters: 25 event ids (36 characters + comma) a record.
            for i in range(0, len(ds), DROP_IDS_PER_RECORD):
                chunk = ds[i:i + DROP_IDS_PER_RECORD]
                details: dict[str, Any] = {f"dropped_{r}": n for r, n in Counter(d.reason for d in chunk).items()}
                details["event_ids"] = ",".join(d.event_id for d in chunk)
                self.audit.append("consent.drop", tenant, None, "events without consent for their purpose", details)

    def _isolate(self, outcomes: list[Accepted | Rejected | Dropped], tenants: Iterable[str], reason: Reason,
                 detail: str) -> list[Accepted | Rejected | Dropped]:
        """The accepted events of ``tenants`` turned into DLQ outcomes: a fault of one tenant stays
        that tenant's (an alert metric counts it), the batch's other tenants go on."""
        tenants = set(tenants)
        if not tenants:
            return outcomes
        out: list[Accepted | Rejected | Dropped] = []
        for o in outcomes:
            if isinstance(o, Accepted) and o.tenant in tenants:
                self._count_isolated(o.tenant, reason)
                out.append(self.processor.reject_accepted(o, reason, detail))
            else:
                out.append(o)
        return out

    async def _unavailable_tenants(self, tenants: set[str]) -> set[str]:
        """Tenants of ``tenants`` whose topic the broker does not have (asked at most every
        ``streams.sinks.tenant_topic.TOPIC_CHECK_SECONDS``; held back while it cannot say)."""
        return await self._hold_back("kafka metadata", lambda: self.topic.unavailable_tenants(tenants))

    async def _write(self, sink: Sink, outcomes: list[Accepted | Rejected | Dropped], batch_id: str
                     ) -> tuple[list[Accepted | Rejected | Dropped], Written]:
        """Write the batch to one sink (held back while it is down). A sink that finds tenants'
        topics missing gets the batch again with their events turned into DLQ outcomes."""
        while True:
            dlq_values: Sequence[bytes] = ()
            quarantine: list[OutRecord] = []
            if sink.carries_dlq:
                rejected = [o for o in outcomes if isinstance(o, Rejected)]
                if rejected:
                    dlq_values, quarantine = await self._hold_back("dlq", lambda: self._thread(self._seal, rejected))
            batch = Batch(batch_id, outcomes, dlq_values, quarantine)
            try:
                return outcomes, (await self._hold_back(sink.name, lambda: sink.write(batch))) or Written()
            except TenantTopicsMissing as exc:  # found only when delivering: isolate, then again
                outcomes = self._isolate(outcomes, exc.tenants, Reason.TENANT_UNAVAILABLE, TOPIC_MISSING)

    def _seal(self, rejected: Sequence[Rejected]) -> tuple[list[bytes], list[OutRecord]]:
        """The rejections' DLQ records, and the quarantine records of those a fix could rescue (each
        DLQ record points at its copy). Blocking: call in a thread."""
        now_ms = int(time.time() * 1000)
        if self.quarantine is None:
            return self.dlq.encode_batch(rejected, now_ms), []
        sealed = self.quarantine.seal_batch(rejected, now_ms)
        topic = self.quarantine.topic
        refs = [(topic, q[0]) if q is not None else None for q in sealed]
        records = [OutRecord(topic, q[1], q[2], [("reason", r.reason.value.encode()),
                                                 ("content-type", b"application/json")])
                   for q, r in zip(sealed, rejected) if q is not None]
        return self.dlq.encode_batch(rejected, now_ms, refs), records

    def _refused_as_drops(self, outcomes: list[Accepted | Rejected | Dropped], refused: Sequence[Accepted]
                          ) -> tuple[list[Accepted | Rejected | Dropped], list[Dropped]]:
        """The store refused these events: their subject was erased (by another worker) after this
        batch's gate read its consent. They become consent drops like any other (counted, audited)
        and are not produced to the tenant topic either (streams.erasure.fence, rule 1)."""
        ids = {(a.tenant, a.event_id) for a in refused}
        out: list[Accepted | Rejected | Dropped] = []
        drops: list[Dropped] = []
        for o in outcomes:
            if isinstance(o, Accepted) and (o.tenant, o.event_id) in ids:
                d = Dropped(o.tenant, o.event_id, o.event_type, DropReason.ERASED.value, o.source)
                drops.append(d)
                out.append(d)
            else:
                out.append(o)
        # A count only: which subject was erased is not the log's business.
        log.info("store refused %d events of erased subjects (erased on another worker after this batch's "
                 "consent check): dropped as erased", len(drops))
        self.metrics.inc(M.STORE_REFUSED_ERASED, len(drops))
        return out, drops

    async def _tombstone_lapsed(self, accepted: Sequence[Accepted], tenants: frozenset[str]) -> None:
        """The batch's in-flight lease lapsed before its topic write was acknowledged (a worker paused,
        or a long hold-back), so an erasure may have stopped waiting for it and tombstoned before
        these events landed. Re-read the subjects' consent and tombstone the events of any subject
        erased meanwhile, after them on the same partition (streams.erasure.fence). Any other
        sink after the store erases those subjects again too: the erasure may have reached it
        before this batch did."""
        log.warning("in-flight lease of a batch lapsed before its topic write (tenants %s): re-checking "
                    "its subjects' consent", ", ".join(sorted(tenants)))
        self.metrics.inc(M.INFLIGHT_LEASE_LAPSED, len(tenants))
        mine = [o for o in accepted if o.tenant in tenants]
        if self.gate is None or not mine:
            return
        subjects = {(o.tenant, o.subject) for o in mine}
        view = await self._hold_back("consent", lambda: self._thread(self.gate.states, subjects))
        # A subject whose consent cannot be read now (its tenant's requests parked, its pseudonym
        # secret damaged) counts as gone: an erasure of it may be among the parked requests.
        gone = [o for o in mine if o.tenant in view.unavailable or view.states[(o.tenant, o.subject)].erased
                or view.states[(o.tenant, o.subject)].suppressed]
        if not gone:
            return
        out = [OutRecord(self.settings.tenant_topic(o.tenant), o.key, None,
                         [("reason", b"erasure"), ("late-batch", b"true")], partition_key=o.partition_key)
               for o in gone]
        await self._hold_back("kafka", lambda: self.kafka.deliver_async(out))
        self.metrics.inc(M.ERASURE_LATE_TOMBSTONES, len(out))
        ids: dict[tuple[str, str], list[str]] = defaultdict(list)
        for o in gone:
            ids[(o.tenant, o.subject)].append(o.event_id)
        for sink in self.sinks[1:]:
            if sink is self.topic:
                continue  # tombstoned above, marked as a late batch's
            for (tenant, subject), event_ids in ids.items():
                erasure = SubjectErasure("late-batch", tenant, subject, tuple(sorted(event_ids)))
                await self._hold_back(sink.name, lambda s=sink, e=erasure: self._thread(s.erase_subject, e))

    async def apply_requests(self) -> None:
        """Apply the privacy requests published so far on this worker's partitions (under the lock)."""
        if self.request_reader is not None:
            own = self.own_partitions()
            await self._hold_back("privacy requests", lambda: self._thread(self.request_reader.catch_up, own))

    async def handle(self, records: Sequence[RawRecord]) -> BatchResult:
        """Process one batch; returns when every record is stored and in its topic, in the DLQ, or dropped.

        Phases, in this order (the module docstring says why): wait for other
        workers' privacy requests (outside the lock); then under the privacy lock
        ``_gate`` (catch up on own requests, validate, consent, transform, and
        isolate tenants whose topic is gone); ``_write_index`` (the store first,
        with the drops' audit; tenants deleted in flight isolated, refused
        subjects turned into drops); the other sinks in order (topics with the
        DLQ, then any other); ``_settle`` (stats, leaving the in-flight sets, late
        tombstones). Every write is held back (retried) while its dependency is
        down, never raised; a fault of one tenant is isolated to the DLQ and the
        batch's other tenants go on. Metrics are counted after the lock.
        """
        started, times = time.perf_counter(), dict[str, float]()
        token = _STAGES.set(times)
        try:
            result = await self._handle(records)
        finally:
            _STAGES.reset(token)
        for stage, seconds in times.items():
            self.metrics.observe(M.BATCH_STAGE_DURATION, seconds, stage=stage)
        self.metrics.observe(M.BATCH_DURATION, time.perf_counter() - started)
        self.metrics.observe(M.BATCH_SIZE, len(records))
        return result

    async def _handle(self, records: Sequence[RawRecord]) -> BatchResult:
        with _stage("requests"):
            await self._wait_for_other_partitions(records)
        async with (self.lock if self.lock is not None else contextlib.nullcontext()):
            outcomes = await self._gate(records)
            await failpoint_async("batch.gated", _sources(records))  # tests: slow between gate and sinks
            # The index (the store) first, then the other sinks in order: every event in a tenant
            # topic (or any later sink) is then in the store's subject index, which is where an
            # erasure finds the events to erase (a crash between the two leaves at most an extra
            # tombstone, never an event the erasure cannot find). The store write also registers the
            # batch as in flight (until the last sink's write returned) and refuses subjects erased
            # since the gate, in the same atomic call.
            batch_id = f"{self._token}-{next(self._seq)}"
            index, *downstream = self.sinks
            with _stage(index.name):
                outcomes, dropped, written, in_flight = await self._write_index(index, outcomes, batch_id)
            await failpoint_async("batch.stored", _sources(records))  # tests: slow between store and topic
            for sink in downstream:  # only the index refuses: these take the batch as it now is
                with _stage(sink.name):
                    outcomes, _ = await self._write(sink, outcomes, batch_id)
            delivered_at = time.time()
            with _stage("stats"):
                _, result = await self._settle(outcomes, dropped, batch_id, in_flight, written)
        self._count_batch(outcomes, delivered_at)
        return result

    async def _wait_for_other_partitions(self, records: Sequence[RawRecord]) -> None:
        """Other workers' partitions' privacy requests first, outside the lock: their timers need no lock of ours."""
        if self.request_reader is not None:
            own = self.own_partitions() | {r.partition for r in records}
            others = set(self.request_reader.ends.partitions) - own
            await self._hold_back("privacy requests", lambda: self._thread(self.request_reader.wait_or_apply, others))

    async def _gate(self, records: Sequence[RawRecord]) -> list[Accepted | Rejected | Dropped]:
        """Catch up on own privacy requests, then the batch's outcomes, with unavailable tenants isolated."""
        if self.request_reader is not None:
            # Validate (CPU, here) while the requests check (I/O, in a thread) runs: one less wait per batch.
            own = self.own_partitions() | {r.partition for r in records}
            check = asyncio.ensure_future(self._thread(self.request_reader.catch_up, own))
            with _stage("validate"):
                validated = self.validate(records)
            with _stage("requests"):
                try:
                    await check
                except Exception:
                    await self._hold_back("privacy requests", lambda: self._thread(self.request_reader.catch_up, own))
        else:
            with _stage("validate"):
                validated = self.validate(records)
        outcomes = await self.outcomes(records, validated)
        # A tenant whose topic is gone (deleted by hand, say) is isolated before anything of the
        # batch is written: its events go to the DLQ and the other tenants' go on.
        with _stage("topic_check"):
            unavailable = await self._unavailable_tenants({o.tenant for o in outcomes if isinstance(o, Accepted)})
        return self._isolate(outcomes, unavailable, Reason.TENANT_UNAVAILABLE, TOPIC_MISSING)

    async def _write_index(self, index: Sink, outcomes: list[Accepted | Rejected | Dropped], batch_id: str
                           ) -> tuple[list[Accepted | Rejected | Dropped], list[Dropped], Written, frozenset[str]]:
        """Write the store (and audit the drops alongside); returns the outcomes as they now are, all drops,
        what the store wrote, and the tenants the batch is in flight for."""
        accepted = [o for o in outcomes if isinstance(o, Accepted)]
        dropped = [o for o in outcomes if isinstance(o, Dropped)]
        store = self._write(index, outcomes, batch_id)
        if dropped and self.audit is not None:
            (_, written), _ = await asyncio.gather(
                store, self._hold_back("audit", lambda: self._thread(self._audit_drops, dropped)))
        else:
            _, written = await store
        # Tenants deleted while the batch was in flight: their events go to the DLQ, and nothing
        # of them was written (the store's script checked the deleted marker).
        outcomes = self._isolate(outcomes, written.deleted, Reason.UNKNOWN_TENANT, DELETED_IN_FLIGHT)
        # Leave every tenant the script may have registered in, in any attempt of the write.
        in_flight = frozenset(a.tenant for a in accepted) - written.deleted
        if written.refused:
            outcomes, late_drops = self._refused_as_drops(outcomes, written.refused)
            dropped = dropped + late_drops
            if self.audit is not None:
                await self._hold_back("audit", lambda: self._thread(self._audit_drops, late_drops))
        return outcomes, dropped, written, in_flight

    async def _settle(self, outcomes: list[Accepted | Rejected | Dropped], dropped: list[Dropped], batch_id: str,
                      in_flight: frozenset[str], written: Written) -> tuple[list[Accepted], BatchResult]:
        """After the last sink: the result, the stats (which leave the in-flight sets), late tombstones."""
        accepted = [o for o in outcomes if isinstance(o, Accepted)]
        result = BatchResult(accepted=len(accepted),
                             rejected=Counter(o.reason.value for o in outcomes if isinstance(o, Rejected)),
                             dropped=Counter(d.reason for d in dropped))
        stats = self.tenant_stats(outcomes)
        # Leaving the in-flight sets rides on the stats' round trip (the topic write is acknowledged).
        lapsed = await self._hold_back("stats", lambda: self.store.add_stats(stats, (batch_id, in_flight)))
        lapsed = frozenset(lapsed or ()) & written.registered
        if lapsed:
            await self._tombstone_lapsed(accepted, lapsed)
        return accepted, result

    def _count_batch(self, outcomes: Sequence[Accepted | Rejected | Dropped], delivered_at: float) -> None:
        """Count the batch's outcomes by tenant (only ever an onboarded one, else ``NO_TENANT``) and
        reason, and each delivered event's end-to-end latency (from its raw record's timestamp)."""
        m = self.metrics
        counts: Counter = Counter()
        for o in outcomes:
            tenant = M.tenant_label(o.tenant)
            counts[(M.EVENTS_PROCESSED, tenant, None)] += 1
            if isinstance(o, Accepted):
                counts[(M.EVENTS_DELIVERED, tenant, None)] += 1
                ts = o.source.timestamp_ms if o.source is not None else None
                if ts is not None and ts > 0:
                    m.observe(M.EVENT_E2E_LATENCY, max(0.0, delivered_at - ts / 1000))
            elif isinstance(o, Dropped):
                counts[(M.EVENTS_CONSENT_DROPPED, tenant, o.reason)] += 1
            else:
                counts[(M.EVENTS_DLQ, tenant, o.reason.value)] += 1
        for (metric, tenant, reason), n in counts.items():
            if reason is None:
                m.inc(metric, n, tenant=tenant)
            else:
                m.inc(metric, n, tenant=tenant, reason=reason)
