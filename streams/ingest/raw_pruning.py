"""Deleting raw events once the pipeline has processed them.

``events.raw`` is the only place raw personal data sits in the clear. Once
every record before offset N of a partition is in a tenant topic, the DLQ or
counted as a drop, nothing needs those records again. So each worker asks the
broker to delete what it has processed (Kafka's DeleteRecords: the partition's
log start moves to N) and the broker removes each segment that lies wholly
before it at its next retention check. Retention (7 days) stays as the
backstop for a pipeline that is down.

The offsets are the worker's own (the end of each batch it finished), not the
group's committed ones: a processed record is done even before Faust commits
it, and a worker restarted below the log start resumes at the log start
(``auto.offset.reset=earliest``), i.e. at the first record nobody processed.
Never ask the group coordinator instead (ListConsumerGroupOffsets): librdkafka
aborts the worker process on a coordinator admin request while the broker
restarts (confluentinc/librdkafka#4605, #3663; the broker restart test).

This is what makes an erasure reach the raw topic too: the subject's raw
events are processed (and dropped, once the erasure is applied), then deleted.
"""

from __future__ import annotations

import logging
from typing import Mapping

from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

log = logging.getLogger(__name__)


class RawPruner:
    """Moves raw topics' log starts up to what this worker has processed. Idempotent; workers
    only ever ask for offsets they processed themselves, so they never delete another's backlog.
    Keys are (topic, partition): the shared ``events.raw`` and each tenant's ``events.raw.<t>``."""

    def __init__(self, admin: AdminClient, timeout: float = 10.0) -> None:
        self.admin = admin
        self.timeout = timeout
        self._pruned: dict[tuple[str, int], int] = {}  # (topic, partition) -> offset we last deleted up to

    def prune(self, processed: Mapping[tuple[str, int], int]) -> dict[tuple[str, int], int]:
        """Delete every record before ``processed[(topic, partition)]`` (the next offset to
        process); returns {(topic, partition): new log start} for the partitions that moved."""
        wanted = [TopicPartition(t, p, off) for (t, p), off in sorted(processed.items())
                  if off > self._pruned.get((t, p), -1)]
        if not wanted:
            return {}
        futures = self.admin.delete_records(wanted, request_timeout=self.timeout, operation_timeout=self.timeout)
        moved: dict[tuple[str, int], int] = {}
        for tp, fut in futures.items():
            try:
                low = fut.result(timeout=self.timeout).low_watermark
            except KafkaException as exc:
                log.warning("deleting processed records of %s[%d] failed: %s", tp.topic, tp.partition, exc)
                continue
            self._pruned[(tp.topic, tp.partition)] = tp.offset
            moved[(tp.topic, tp.partition)] = low
        if moved:
            log.debug("raw topics pruned to %s", moved)
        return moved
