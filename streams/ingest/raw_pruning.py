"""Deleting raw events once the pipeline has processed them.

``events.raw`` is the only place raw personal data sits in the clear. Once
every record before offset N of a partition is in a tenant topic, the DLQ or
counted as a drop, the worker group commits N, and nothing needs those records
again: a restarted worker resumes at N. So the workers ask the broker to delete
them (Kafka's DeleteRecords: the partition's log start moves to N) and the
broker removes each segment that lies wholly before it at its next retention
check. Retention (7 days) stays as the backstop for a pipeline that is down.

This is what makes an erasure reach the raw topic too: the subject's raw
events are processed (and dropped, once the erasure is applied), then deleted.
"""

from __future__ import annotations

import logging
from typing import Mapping

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

log = logging.getLogger(__name__)


class RawPruner:
    """Moves the raw topic's log start up to the worker group's committed offsets. Idempotent,
    safe to run from every worker at once (each asks for the same offsets)."""

    def __init__(self, admin: AdminClient, topic: str, group: str, timeout: float = 10.0) -> None:
        self.admin = admin
        self.topic = topic
        self.group = group
        self.timeout = timeout
        self._pruned: dict[int, int] = {}  # partition -> offset we last deleted up to

    def committed(self) -> dict[int, int]:
        """The group's committed offset per partition of the raw topic (those with one)."""
        req = ConsumerGroupTopicPartitions(self.group)
        fut = self.admin.list_consumer_group_offsets([req], request_timeout=self.timeout)[self.group]
        out: dict[int, int] = {}
        for tp in fut.result(timeout=self.timeout).topic_partitions or []:
            if tp.topic == self.topic and tp.offset >= 0 and tp.error is None:
                out[tp.partition] = tp.offset
        return out

    def prune(self, committed: Mapping[int, int] | None = None) -> dict[int, int]:
        """Delete every record before the committed offsets; returns {partition: new log start}
        for the partitions that moved. Raises KafkaException when the broker cannot be asked."""
        committed = self.committed() if committed is None else committed
        wanted = [TopicPartition(self.topic, p, off) for p, off in sorted(committed.items())
                  if off > self._pruned.get(p, -1)]
        if not wanted:
            return {}
        futures = self.admin.delete_records(wanted, request_timeout=self.timeout, operation_timeout=self.timeout)
        moved: dict[int, int] = {}
        for tp, fut in futures.items():
            try:
                low = fut.result(timeout=self.timeout).low_watermark
            except KafkaException as exc:
                log.warning("deleting processed records of %s[%d] failed: %s", tp.topic, tp.partition, exc)
                continue
            self._pruned[tp.partition] = tp.offset
            moved[tp.partition] = low
        if moved:
            log.debug("raw topic pruned to %s", moved)
        return moved
