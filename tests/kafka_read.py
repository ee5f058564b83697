"""Reading topics in tests with plain confluent-kafka."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, Message

from streams.ops.kafka_client import client_config


def read_topic(bootstrap: "str | dict", topic: str, expect: int | None = None, timeout: float = 60.0,
               idle: float = 3.0) -> list[Message]:
    """All records of ``topic`` from the start: until ``expect`` are read, or ``idle`` s pass with none new.

    The idle clock starts only once partitions are assigned: right after a broker restart the group
    coordinator can take longer than ``idle`` to load, and an empty read then would be a false answer.
    """
    c = Consumer({**client_config(bootstrap), "log_level": 0, "group.id": f"test-read-{uuid.uuid4().hex[:8]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    assigned: list[bool] = []
    c.subscribe([topic], on_assign=lambda _c, parts: assigned.append(bool(parts)))
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline:
            msg = c.poll(0.3)
            if msg is not None and not msg.error():
                out.append(msg)
                last_new = time.monotonic()
                if expect is not None and len(out) >= expect:
                    # keep reading a little to catch duplicates
                    idle_deadline = time.monotonic() + 1.0
                    while time.monotonic() < idle_deadline:
                        m = c.poll(0.2)
                        if m is not None and not m.error():
                            out.append(m)
                    break
            elif not any(assigned):
                last_new = time.monotonic()
            elif expect is None and time.monotonic() - last_new > idle:
                break
    finally:
        c.close()
    return out
