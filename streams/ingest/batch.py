"""One batch of raw records through the pipeline: process, deliver, store, then (and only then) ack.

The worker calls ``BatchPipeline.handle`` with each batch Faust gives it and
acknowledges the batch's offsets after it returns. ``handle`` returns only
when every record is in its tenant topic and the store, or in the DLQ: while
a sink is down it retries with back-off instead of raising, because Faust's
``take_events`` acknowledges a batch even when the consumer raises.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Protocol, Sequence

import redis

from streams.dlq.record import encode_dlq
from streams.dlq.reasons import Reason
from streams.ingest.processor import Accepted, EventProcessor, Rejected, SourceRef, Validated
from streams.privacy.exceptions import KeyIntegrityError, KeyProviderError
from streams.privacy.transforms import SubjectCipher
from streams.ops.metrics import Metrics
from streams.settings import Settings
from streams.sinks.exceptions import SinkUnavailable
from streams.sinks.kafka_sink import KafkaSink, OutRecord
from streams.sinks.store import StoreWriter

log = logging.getLogger(__name__)


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
    attempts: int = 1


class SubjectKeySource(Protocol):
    """Where subject keys come from (``streams.privacy.keys.KeyStore``): get-or-create, per tenant."""

    def subject_keys(self, tenant: str, subjects: Iterable[str], create: bool = True) -> dict[str, bytes]: ...


class BatchPipeline:
    def __init__(self, settings: Settings, processor: EventProcessor, kafka: KafkaSink,
                 store: StoreWriter, keys: SubjectKeySource, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.processor = processor
        self.kafka = kafka
        self.store = store
        self.keys = keys
        self.metrics = metrics or Metrics()

    async def outcomes(self, records: Sequence[RawRecord]) -> list[Accepted | Rejected]:
        """Validate all, fetch the batch's subject keys (one call per tenant), then transform."""
        validated = [self.processor.validate(r.key, r.value, SourceRef(r.topic, r.partition, r.offset, r.timestamp_ms))
                     for r in records]
        wanted: dict[str, set[str]] = defaultdict(set)
        for v in validated:
            if isinstance(v, Validated):
                wanted[v.tenant].add(v.subject)
        ciphers, failed = await self._ciphers(wanted)
        now_ms = int(time.time() * 1000)
        out: list[Accepted | Rejected] = []
        for v in validated:
            if not isinstance(v, Validated):
                out.append(v)
            elif v.tenant in failed:
                out.append(self.processor.reject_validated(v, Reason.PROCESSING_ERROR, failed[v.tenant]))
            else:
                out.append(self.processor.finish(v, ciphers[(v.tenant, v.subject)], now_ms))
        return out

    async def _ciphers(self, wanted: dict[str, set[str]]) -> tuple[dict[tuple[str, str], SubjectCipher], dict[str, str]]:
        loop = asyncio.get_running_loop()
        ciphers: dict[tuple[str, str], SubjectCipher] = {}
        failed: dict[str, str] = {}
        delay = 0.1
        for tenant, subjects in wanted.items():
            while True:
                try:
                    keys = await loop.run_in_executor(None, self.keys.subject_keys, tenant, subjects)
                    break
                except (redis.RedisError, OSError, KeyProviderError, KeyIntegrityError) as exc:
                    # The key store is down, or the master key is missing or wrong: a systemic fault,
                    # not the events' — hold the batch back (lag grows, alerts fire) rather than
                    # dead-letter every event of the tenant.
                    self.metrics.inc("streams_sink_retries_total", sink="keys")
                    log.warning("key store unavailable (%s: %s); retrying in %.1fs", type(exc).__name__, exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.settings.sink_retry_max_seconds)
                except Exception as exc:  # a damaged wrapped key: these events go to the DLQ, the rest goes on
                    log.error("subject keys of tenant %s unusable: %s", tenant, type(exc).__name__)
                    failed[tenant] = f"{type(exc).__name__} getting the subject key"
                    keys = {}
                    break
            for subject, key in keys.items():
                ciphers[(tenant, subject)] = SubjectCipher(key)
        return ciphers, failed

    def out_records(self, outcomes: Sequence[Accepted | Rejected]) -> list[OutRecord]:
        out: list[OutRecord] = []
        for o in outcomes:
            if isinstance(o, Accepted):
                out.append(OutRecord(
                    self.settings.tenant_topic(o.tenant), o.key, o.value,
                    [("event-type", o.event_type.encode()), ("event-id", o.event_id.encode()),
                     ("content-type", b"application/avro")],
                ))
            else:
                out.append(OutRecord(
                    self.settings.dlq_topic, o.tenant.encode() if o.tenant else None, encode_dlq(o),
                    [("reason", o.reason.value.encode()), ("content-type", b"application/json")],
                ))
        return out

    async def handle(self, records: Sequence[RawRecord]) -> BatchResult:
        outcomes = await self.outcomes(records)
        accepted = [o for o in outcomes if isinstance(o, Accepted)]
        result = BatchResult(accepted=len(accepted),
                             rejected=Counter(o.reason.value for o in outcomes if isinstance(o, Rejected)))
        out = self.out_records(outcomes)
        delay = 0.1
        pending = {"kafka": lambda: self.kafka.deliver_async(out),
                   "store": lambda: self.store.write_batch(accepted)}
        while pending:
            # Both sinks at once (they are independent); retry only the one that failed.
            names = list(pending)
            results = await asyncio.gather(*(pending[n]() for n in names), return_exceptions=True)
            for name, res in zip(names, results):
                if isinstance(res, BaseException) and not isinstance(res, SinkUnavailable):
                    raise res
                if not isinstance(res, BaseException):
                    del pending[name]
                    continue
                # Hold back: nothing of this batch is acked until both sinks took it.
                self.metrics.inc("streams_sink_retries_total", help="Batch writes retried because a sink failed",
                                 sink=name)
                log.warning("%s sink unavailable (%s); retrying batch of %d in %.1fs", name, res, len(records), delay)
            if pending:
                result.attempts += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.sink_retry_max_seconds)
        m = self.metrics
        m.inc("streams_events_processed_total", len(records), help="Raw events processed")
        for o in accepted:
            m.inc("streams_events_delivered_total", help="Clean events delivered to tenant topic and store",
                  tenant=o.tenant)
        for reason, n in result.rejected.items():
            m.inc("streams_events_dlq_total", n, help="Events sent to the DLQ", reason=reason)
        return result
