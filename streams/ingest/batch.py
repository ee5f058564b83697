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
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from streams.dlq.record import encode_dlq
from streams.ingest.processor import Accepted, EventProcessor, Rejected, SourceRef
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


class BatchPipeline:
    def __init__(self, settings: Settings, processor: EventProcessor, kafka: KafkaSink,
                 store: StoreWriter, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.processor = processor
        self.kafka = kafka
        self.store = store
        self.metrics = metrics or Metrics()

    def outcomes(self, records: Sequence[RawRecord]) -> list[Accepted | Rejected]:
        now_ms = int(time.time() * 1000)
        return [
            self.processor.process(r.key, r.value, SourceRef(r.topic, r.partition, r.offset, r.timestamp_ms), now_ms)
            for r in records
        ]

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
        outcomes = self.outcomes(records)
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
