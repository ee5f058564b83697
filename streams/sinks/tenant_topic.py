"""The tenant topics as a ``Sink`` (``streams.sinks.base``): clean events to ``tenant.<t>.events``,
rejections to the DLQ in the same produce call, tombstones for an erasure, topic deletion for a
tenant's deletion.

Erasure: one tombstone per event key (``<subject>/<event id>``, null value, headers saying why),
partitioned by subject like the events, so each tombstone lands after its event on the same
partition; the topic is compacted, so the broker then removes the events from its disk. A
compacted topic has no subject index: the event ids come from the store's index
(``SubjectErasure.event_ids``), which is why this sink is erased before the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Iterable, Sequence

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from streams.ops.topics import tenant_topics
from streams.records import Accepted, Rejected, record_key
from streams.settings import Settings
from streams.sinks.base import Batch, Outcome, Sink, SubjectErasure
from streams.sinks.exceptions import SinkError, SinkUnavailable, TenantTopicsMissing
from streams.sinks.kafka_sink import KafkaSink, OutRecord

log = logging.getLogger(__name__)

#: How often the broker is asked again which tenant topics exist (one metadata request).
TOPIC_CHECK_SECONDS = 2.0
ADMIN_TIMEOUT = 30.0


class TenantTopicSink(Sink):
    """``producer``: the worker's producer (None where only tenant deletion runs);
    ``admin``: an admin client for ``drop_tenant`` (None in the worker)."""

    name = "kafka"
    erase_step = "tombstone"
    drop_step = "topics"
    carries_dlq = True

    def __init__(self, settings: Settings, producer: KafkaSink | None, admin: AdminClient | None = None) -> None:
        self.settings = settings
        self.producer = producer
        self.admin = admin
        # Tenant topics the broker was found not to have (checked every TOPIC_CHECK_SECONDS).
        self._missing_topics: set[str] = set()
        self._topics_known: set[str] = set()
        self._topics_checked_at = float("-inf")

    # ------------------------------------------------------------------ write

    def records(self, outcomes: Sequence[Outcome], dlq_values: Sequence[bytes]) -> list[OutRecord]:
        """The records to produce: accepted ones to their tenant topic, rejected ones to the DLQ
        (``dlq_values``: the rejections' sealed DLQ records, in order)."""
        values = iter(dlq_values)
        out: list[OutRecord] = []
        for o in outcomes:
            if isinstance(o, Accepted):
                out.append(OutRecord(
                    self.settings.tenant_topic(o.tenant), o.key, o.value,
                    [("event-type", o.event_type.encode()), ("event-id", o.event_id.encode()),
                     ("content-type", b"application/avro")],
                    partition_key=o.partition_key,
                ))
            elif isinstance(o, Rejected):
                out.append(OutRecord(
                    self.settings.dlq_topic, o.tenant.encode() if o.tenant else None, next(values),
                    [("reason", o.reason.value.encode()), ("content-type", b"application/json")],
                ))
        return out

    async def write(self, batch: Batch) -> None:
        try:
            await self.producer.deliver_async(self.records(batch.outcomes, batch.dlq_values) + list(batch.quarantine))
        except SinkUnavailable:
            missing = await self.unavailable_tenants({a.tenant for a in batch.accepted}, force=True)
            if missing:
                raise TenantTopicsMissing(frozenset(missing)) from None
            raise  # not a tenant's fault: the batch is held back

    async def unavailable_tenants(self, tenants: set[str], force: bool = False) -> set[str]:
        """Tenants of ``tenants`` whose topic the broker does not have; the broker is asked at most
        every TOPIC_CHECK_SECONDS (one metadata request), or now when ``force``. Raises
        SinkUnavailable when the broker cannot say."""
        check = getattr(self.producer, "missing_topics", None)
        if not tenants or check is None:
            return set()
        topics = {self.settings.tenant_topic(t): t for t in tenants}
        now = time.monotonic()
        if force or now - self._topics_checked_at >= TOPIC_CHECK_SECONDS or not set(topics) <= self._topics_known:
            missing = await asyncio.get_running_loop().run_in_executor(None, check, list(topics))
            self._missing_topics = (self._missing_topics - set(topics)) | missing
            self._topics_known |= set(topics)
            self._topics_checked_at = now
            if missing:
                log.error("tenant topics missing, their events go to the DLQ: %s", ", ".join(sorted(missing)))
        return {t for name, t in topics.items() if name in self._missing_topics}

    # ------------------------------------------------------------------ erase, drop

    def erase_subject(self, erasure: SubjectErasure) -> dict[str, Any]:
        headers = [("reason", b"erasure"), ("request-id", erasure.request_id.encode())]
        topic = self.settings.tenant_topic(erasure.tenant)
        self.producer.deliver([OutRecord(topic, record_key(erasure.subject, e), None, headers,
                                         partition_key=erasure.subject.encode()) for e in erasure.event_ids])
        # The fence is what puts these tombstones after every event that overtook the marker.
        return {"topic": topic, "events": len(erasure.event_ids), "in_flight_waited": erasure.in_flight_waited,
                "in_flight_lapsed": erasure.in_flight_lapsed}

    def drop_tenant(self, tenant: str) -> dict[str, Any]:
        """Delete the tenant's topics (those that exist): ``{"deleted": [names]}``."""
        return {"deleted": self._delete_topics([s.name for s in tenant_topics(self.settings, tenant)])}

    def _delete_topics(self, names: Iterable[str]) -> list[str]:
        existing = self.admin.list_topics(timeout=ADMIN_TIMEOUT).topics
        gone = [n for n in names if n in existing]
        if gone:
            futures = self.admin.delete_topics(gone, operation_timeout=ADMIN_TIMEOUT, request_timeout=ADMIN_TIMEOUT)
            for name, fut in futures.items():
                try:
                    fut.result()
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                        raise SinkError(f"deleting topic {name} failed: {exc.args[0].str()}") from None
        return gone

    # ------------------------------------------------------------------ stop

    async def flush(self) -> None:
        if self.producer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.producer.close)

    async def close(self) -> None:
        pass  # librdkafka's producer has no close; flush (above) delivered what was queued
