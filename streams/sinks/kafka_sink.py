"""Produces a batch of records (tenant topics and DLQ) and waits until the broker acknowledged each one.

The worker consumes through Faust (aiokafka) but produces through
confluent-kafka (librdkafka): the C client batches and compresses off the
event loop and was measured several times faster (DESIGN: known facts).
The idempotent producer keeps per-partition order across its own retries, so
a subject's events stay in order in its tenant topic.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from confluent_kafka import KafkaError, Producer

from streams.connections import KafkaTarget, producer_config
from streams.sinks.exceptions import SinkUnavailable
from streams.sinks.partitioning import partition_for

log = logging.getLogger(__name__)


@dataclass
class OutRecord:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    # Place the record where Kafka's default partitioner would put this key (not ``key``).
    partition_key: bytes | None = None


class KafkaSink:
    """Thread-confined librdkafka producer with a blocking ``deliver`` and an async wrapper."""

    def __init__(self, target: KafkaTarget, extra: dict[str, object] | None = None) -> None:
        self._producer = Producer(producer_config(target, extra))
        self._lock = threading.Lock()  # one batch in flight at a time: flush() waits for exactly it
        self._partitions: dict[str, int] = {}

    def partition_count(self, topic: str, timeout: float = 10.0) -> int:
        """Partitions of ``topic``, from the broker once (the project never shrinks a topic)."""
        n = self._partitions.get(topic)
        if n is None:
            try:
                md = self._producer.list_topics(topic, timeout=timeout).topics.get(topic)
            except Exception as exc:  # KafkaException: broker unreachable
                raise SinkUnavailable(f"no metadata for topic {topic}: {exc}") from None
            if md is None or md.error is not None or not md.partitions:
                raise SinkUnavailable(f"no metadata for topic {topic}: {md.error if md else 'unknown topic'}")
            n = self._partitions[topic] = len(md.partitions)
        return n

    def deliver(self, records: Sequence[OutRecord], timeout: float = 30.0) -> None:
        """Produce ``records`` and return once the broker acknowledged all of them.

        Raises SinkUnavailable listing how many failed; the caller retries the
        whole batch (possible duplicates are removed by event id downstream).
        """
        if not records:
            return
        with self._lock:
            failed: list[KafkaError] = []
            pending = [0]

            def on_delivery(err: KafkaError | None, _msg: object) -> None:
                pending[0] -= 1
                if err is not None:
                    failed.append(err)

            for r in records:
                extra = {}
                if r.partition_key is not None:
                    extra["partition"] = partition_for(r.partition_key, self.partition_count(r.topic))
                while True:
                    try:
                        self._producer.produce(r.topic, r.value, r.key, headers=r.headers, on_delivery=on_delivery,
                                               **extra)
                        pending[0] += 1
                        break
                    except BufferError:
                        self._producer.poll(0.05)  # local queue full: let deliveries drain
            remaining = self._producer.flush(timeout)
            if remaining or pending[0] > 0:
                raise SinkUnavailable(f"{max(remaining, pending[0])} records not acknowledged within {timeout}s")
            if failed:
                raise SinkUnavailable(f"{len(failed)} records failed: {failed[0].name()}")

    def missing_topics(self, topics: Iterable[str], timeout: float = 10.0) -> set[str]:
        """Which of ``topics`` the broker does not have (fresh metadata; cached counts forgotten)."""
        try:
            md = self._producer.list_topics(timeout=timeout).topics
        except Exception as exc:  # broker unreachable: nothing is known to be missing
            raise SinkUnavailable(f"no metadata: {exc}") from None
        missing = {t for t in topics if t not in md or md[t].error is not None}
        for t in missing:
            self._partitions.pop(t, None)
        return missing

    async def deliver_async(self, records: Sequence[OutRecord], timeout: float = 30.0) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.deliver, records, timeout)

    def close(self, timeout: float = 10.0) -> None:
        self._producer.flush(timeout)
