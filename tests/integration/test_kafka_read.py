"""The tests' topic reader (tests/kafka_read.py) tells a failed read from an empty topic."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Producer

from tests.kafka_read import TopicReadError, read_topic

pytestmark = pytest.mark.integration


def test_read_of_a_missing_topic_raises_instead_of_returning_nothing(make_settings):
    s = make_settings()
    missing = f"never.created.{uuid.uuid4().hex[:8]}"
    with pytest.raises(TopicReadError, match=missing):
        read_topic(s.kafka(), missing, expect=None, timeout=30, idle=2)


def test_read_of_an_empty_topic_returns_nothing(make_settings):
    s = make_settings()  # its DLQ topic exists and nothing wrote to it
    assert read_topic(s.kafka(), s.dlq_topic, expect=None, timeout=30, idle=2) == []


def test_read_returns_every_record_from_the_start(make_settings):
    s = make_settings()
    p = Producer(s.kafka())
    for i in range(3):
        p.produce(s.dlq_topic, f"v{i}".encode(), f"k{i}".encode())
    assert p.flush(30) == 0
    msgs = read_topic(s.kafka(), s.dlq_topic, expect=None, timeout=30, idle=2)
    assert sorted(m.value() for m in msgs) == [b"v0", b"v1", b"v2"]
