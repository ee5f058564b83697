"""Processed raw events are deleted from events.raw: the log start follows what a worker processed."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streams.ingest.raw_pruning import RawPruner
from streams.connections import admin_client

pytestmark = pytest.mark.integration


def test_pruner_deletes_up_to_the_committed_offset_only(make_settings):
    s = make_settings()
    p = Producer({"bootstrap.servers": s.kafka_bootstrap})
    for i in range(10):
        p.produce(s.raw_topic, f"v{i}".encode(), b"k", partition=1)
    assert p.flush(10) == 0
    pruner = RawPruner(admin_client(s))
    assert pruner.prune({}) == {}  # nothing processed: nothing deleted
    assert pruner.prune({(s.raw_topic, 1): 6}) == {(s.raw_topic, 1): 6}
    assert pruner.prune({(s.raw_topic, 1): 6}) == {}  # already there: no request

    reader = Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": "pruning-reader"})
    low, high = reader.get_watermark_offsets(TopicPartition(s.raw_topic, 1), timeout=10)
    reader.close()
    assert (low, high) == (6, 10)  # the 4 unprocessed records stay
