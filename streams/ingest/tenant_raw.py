"""Ingest from the tenants' own raw topics (``events.raw.<tenant>``), where the broker binds a
producer to its tenant.

Each onboarded tenant has a producer principal that may write only its raw topic (a
broker ACL), so the topic an event arrived on says who sent it, and the processor sends an
event naming any other tenant to the DLQ (``tenant_mismatch``). The shared ``events.raw``
stays for pipeline producers (the project's own tools), which are trusted to name the tenant.

Why a confluent-kafka consumer and not a Faust agent: tenants are onboarded while workers
run, so the set of topics changes at run time. librdkafka subscribes by regular expression
and picks up new matching topics at each metadata refresh; faust-streaming's Kafka driver
does not support pattern subscriptions (its ``subscribe`` says "pattern does not work"), and
its re-subscription after a topic set change waits a fixed 45 s lock. The batches go
through the same ``BatchPipeline.handle`` as the Faust agent's (same lock, same privacy
requests check, same sinks and hold-back), and offsets are committed only after ``handle``
returned, so delivery stays at least once.

Tenants share the worker fairly (``streams.ingest.fairness``): what the consumer returns goes
into one buffer per tenant raw topic, each batch takes an equal share from every tenant with
records, and a tenant whose buffer is over its high-water mark has its partitions paused in the
consumer until the worker has caught up with it, so one tenant's flood never queues in front
of the others' events.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Awaitable, Callable, Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streams.connections import consumer_config
from streams.ingest.batch import RawRecord
from streams.ingest.fairness import FairBuffer
from streams.settings import Settings

log = logging.getLogger(__name__)

#: How long one poll waits for the first record of a batch (then ``batch_within`` for the rest).
IDLE_POLL_SECONDS = 0.5
#: At most this many queued records are moved into the fair buffers per poll (a call's cap).
DRAIN_MAX = 20_000


def tenant_raw_pattern(settings: Settings) -> str:
    """The subscription: every tenant raw topic, present or future (librdkafka's regex dialect
    is small: no bounded repeats; the processor checks the name in full)."""
    return "^" + re.escape(settings.raw_topic + ".") + "[a-z][a-z0-9-]*$"


def tenant_raw_consumer_config(settings: Settings) -> dict[str, object]:
    """The consumer of the tenant raw topics: its group, read_committed, and small prefetches."""
    return consumer_config(settings.kafka(), f"{settings.app_id}.tenant-raw", {
        "auto.offset.reset": "earliest",
        # A producer may use transactions: never read past an open one, never deliver aborted records.
        "isolation.level": "read_committed",
        # New tenants' raw topics are found at the next metadata refresh.
        "topic.metadata.refresh.interval.ms": 5000,
        "session.timeout.ms": int(settings.session_timeout * 1000),
        "heartbeat.interval.ms": int(min(3.0, settings.session_timeout / 5) * 1000),
        "fetch.max.bytes": max(4 * 1_048_576, settings.max_event_bytes * 4),
        "max.partition.fetch.bytes": max(1_048_576, settings.max_event_bytes * 2),
        # Prefetch little per partition (librdkafka's default keeps 100,000 records of each in its
        # one queue): a flooding tenant's prefetched records are queued in front of the others'
        # new ones until the worker has taken them (streams.ingest.fairness).
        "queued.min.messages": max(100, settings.batch_size),
        "queued.max.messages.kbytes": max(1024, settings.max_event_bytes * 4 // 1024),
        # Once a fetch response is over those limits (a flooder's partitions fill one quickly),
        # librdkafka waits this long before fetching any partition again (default 1 s): the other
        # tenants' new events waited for it. The worker drains the queue at every poll.
        "fetch.queue.backoff.ms": 10,
        "log_level": 3,
        "logger": logging.getLogger("streams.kafka.tenant_raw"),
    })


def fair_buffer(settings: Settings) -> FairBuffer[Message]:
    return FairBuffer(settings.batch_size, quantum=settings.fair_quantum or None)


def _record(m: Message) -> RawRecord:
    kind, ts = m.timestamp()
    return RawRecord(m.key(), m.value(), m.topic(), m.partition(), m.offset(), ts if kind and ts >= 0 else None)


class TenantRawIngest:
    """The consume → handle → commit loop over the tenant raw topics (one per worker process)."""

    def __init__(self, settings: Settings, handle: Callable[[Sequence[RawRecord]], Awaitable[object]],
                 on_processed: Callable[[dict[tuple[str, int], int]], None]) -> None:
        self.settings = settings
        self.handle = handle
        self.on_processed = on_processed
        self._consumer: Consumer | None = None
        self.buffer: FairBuffer[Message] = fair_buffer(settings)

    def _poll(self) -> list[Message]:
        c = self._consumer
        assert c is not None
        got: list[Message] = []
        if not len(self.buffer):
            first = c.poll(IDLE_POLL_SECONDS)
            if first is None:
                return []
            got.append(first)
            if self.settings.batch_size > 1:
                got.extend(c.consume(self.settings.batch_size - 1, self.settings.batch_within))
        # Then everything librdkafka has queued, without waiting: its one queue holds the tenants'
        # records in fetch order, so a light tenant's new events can sit behind a flooding tenant's
        # prefetched ones; in the worker's per-tenant buffers they are taken in the next fair batch.
        # (Bounded: queued.max.messages.kbytes, and a tenant over its high-water mark is paused.)
        got.extend(c.consume(DRAIN_MAX, 0))
        return got

    def _poll_batch(self) -> list[Message]:
        """The next fair batch (consumer thread): poll, buffer per tenant topic, pause tenants over
        their high-water mark, take a batch shared fairly, resume tenants that are caught up."""
        c = self._consumer
        assert c is not None
        good = []
        for m in self._poll():
            err = m.error()
            if err is None:
                good.append(m)
            elif err.code() not in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART):
                # Names and codes only: a record's content never reaches a log line.
                log.warning("tenant raw consumer: %s", err.name())
        self.buffer.add(good)
        pause = self.buffer.to_pause()
        if pause:
            c.pause([TopicPartition(t, p) for t, p in pause])
        batch = self.buffer.take()
        resume = self.buffer.to_resume()
        if resume:
            c.resume([TopicPartition(t, p) for t, p in resume])
        return batch

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Their new owner reads them from the committed offset: buffered records of them are not ours.
        dropped = self.buffer.drop_partitions((tp.topic, tp.partition) for tp in partitions)
        if dropped:
            log.info("tenant raw consumer: %d buffered records of revoked partitions left to their new owner",
                     dropped)

    def _commit(self, offsets: dict[tuple[str, int], int]) -> None:
        assert self._consumer is not None
        try:
            self._consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                  asynchronous=False)
        except KafkaException as exc:
            # A rebalance took the partitions meanwhile: the next owner re-reads the batch
            # (at least once; sinks are idempotent by event id).
            log.warning("committing tenant raw offsets failed: %s", exc.args[0].name())

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._consumer = Consumer(tenant_raw_consumer_config(self.settings))
        self.buffer = fair_buffer(self.settings)  # a new consumer: nothing buffered, nothing paused
        self._consumer.subscribe([tenant_raw_pattern(self.settings)], on_revoke=self._on_revoke)
        try:
            while True:
                records = [_record(m) for m in await loop.run_in_executor(None, self._poll_batch)]
                if not records:
                    continue
                task = asyncio.ensure_future(self.handle(records))
                try:
                    await asyncio.shield(task)
                except asyncio.CancelledError:
                    await task  # stopping: finish (and commit) the batch in hand first
                    self._done(records)
                    await loop.run_in_executor(None, self._commit, next_offsets(records))
                    raise
                self._done(records)
                await loop.run_in_executor(None, self._commit, next_offsets(records))
        finally:
            consumer, self._consumer = self._consumer, None
            await loop.run_in_executor(None, consumer.close)

    def _done(self, records: Sequence[RawRecord]) -> None:
        self.on_processed(next_offsets(records))

    async def run_forever(self, retry_seconds: float = 1.0) -> None:
        """``run``, started again after a failure (the broker gone, say): a dead loop would
        silently stop every tenant's own input while the worker looks healthy."""
        while True:
            try:
                await self.run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("tenant raw ingest stopped (%s); restarting in %.0fs", type(exc).__name__, retry_seconds)
                await asyncio.sleep(retry_seconds)


def next_offsets(records: Sequence[RawRecord]) -> dict[tuple[str, int], int]:
    """{(topic, partition): the offset after the last of ``records``}: what to commit and prune."""
    out: dict[tuple[str, int], int] = {}
    for r in records:
        key = (r.topic, r.partition)
        out[key] = max(out.get(key, 0), r.offset + 1)
    return out
