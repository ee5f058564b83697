"""Reading topics in tests with plain confluent-kafka."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, Message

from streams.connections import client_config

# Errors that no waiting repairs: the read fails at once instead of returning what it has.
_FATAL_CODES = {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED,
                KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._AUTHENTICATION}
_MISSING_TOPIC_CODES = {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC}


class TopicReadError(AssertionError):
    """The topic could not be read (missing, not authorized, never assigned): not an empty topic."""


def read_topic(bootstrap: "str | dict", topic: str, expect: int | None = None, timeout: float = 60.0,
               idle: float = 3.0) -> list[Message]:
    """All records of ``topic`` from the start: until ``expect`` are read, or ``idle`` s pass with none new.

    The idle clock starts only once partitions are assigned: right after a broker restart the group
    coordinator can take longer than ``idle`` to load, and an empty read then would be a false answer.
    Raises ``TopicReadError`` when the topic does not exist, reading it is not authorized, or no
    partition was assigned within ``timeout`` (with the consumer errors seen), so a failed read is
    never mistaken for an empty topic. Transient errors (broker down for a while) are retried.
    """
    c = Consumer({**client_config(bootstrap), "log_level": 0, "group.id": f"test-read-{uuid.uuid4().hex[:8]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    assigned: list[bool] = []
    errors: list[str] = []
    c.subscribe([topic], on_assign=lambda _c, parts: assigned.append(bool(parts)))
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    last_new = time.monotonic()

    def check(msg: Message) -> bool:
        """True for a record; False after a transient error; raises for one no waiting repairs."""
        err = msg.error()
        if err is None:
            return True
        if err.code() == KafkaError._PARTITION_EOF:
            return False
        errors.append(f"{err.name()}: {err.str()}")
        if err.fatal() or err.code() in _FATAL_CODES:
            raise TopicReadError(f"reading {topic}: {err.name()}: {err.str()}")
        if err.code() in _MISSING_TOPIC_CODES and not _topic_exists(c, topic):
            raise TopicReadError(f"topic {topic} does not exist ({err.name()})")
        return False

    try:
        while time.monotonic() < deadline:
            msg = c.poll(0.3)
            if msg is not None and check(msg):
                out.append(msg)
                last_new = time.monotonic()
                if expect is not None and len(out) >= expect:
                    # keep reading a little to catch duplicates
                    idle_deadline = time.monotonic() + 1.0
                    while time.monotonic() < idle_deadline:
                        m = c.poll(0.2)
                        if m is not None and check(m):
                            out.append(m)
                    break
            elif not any(assigned):
                last_new = time.monotonic()
            elif expect is None and time.monotonic() - last_new > idle:
                break
        if not any(assigned) and not out:
            raise TopicReadError(f"no partition of {topic} assigned within {timeout}s; "
                                 f"consumer errors: {errors[-5:] or 'none'}")
    finally:
        c.close()
    return out


def _topic_exists(c: Consumer, topic: str) -> bool:
    try:
        md = c.list_topics(topic, timeout=10).topics.get(topic)
    except KafkaException:
        return True  # the broker is away: not an answer about the topic, keep waiting
    return md is not None and md.error is None and bool(md.partitions)
