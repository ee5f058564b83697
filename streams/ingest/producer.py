"""The producer helper: publish events to ``events.raw`` as Avro single-object or JSON.

Any Kafka client can publish; this helper only gets the two details right
that matter to the pipeline: the key (``<tenant_id>/<subject_id>``, so
privacy requests co-partition with events) and the wire format.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Iterable, Literal

from confluent_kafka import Producer

from streams.connections import KafkaTarget, client_config
from streams.schema import codec
from streams.schema.exceptions import UnknownSchemaError
from streams.schema.json_datum import SCHEMA_KEY, to_datum
from streams.schema.registry import SchemaRegistry
from streams.sinks.exceptions import SinkUnavailable

WireFormat = Literal["avro", "json"]


def event_key(event: dict[str, Any]) -> bytes:
    return f"{event.get('tenant_id', '')}/{event.get('subject_id', '')}".encode()


def encode_event(registry: SchemaRegistry, event: dict[str, Any], fmt: WireFormat) -> bytes:
    """``event`` is a JSON-style dict with a ``schema`` member. Raises SchemaViolation/UnknownSchemaError."""
    name = event.get(SCHEMA_KEY)
    entry = registry.by_name(name) if isinstance(name, str) else None
    if entry is None:
        raise UnknownSchemaError("the 'schema' member names no schema in schemas/")  # producer text: not echoed
    fields = {k: v for k, v in event.items() if k != SCHEMA_KEY}
    datum = to_datum(entry.expanded, fields, "")  # validates both formats before anything is sent
    if fmt == "json":
        body = dict(event)
        body[SCHEMA_KEY] = entry.event_type
        return json.dumps(body, separators=(",", ":")).encode()
    return codec.encode(entry, datum)


class EventProducer:
    """Publishes and waits for the broker's acknowledgement of every event."""

    def __init__(self, bootstrap: KafkaTarget, topic: str, registry: SchemaRegistry) -> None:
        self.topic = topic
        self.registry = registry
        self._producer = Producer({**client_config(bootstrap), "enable.idempotence": True, "linger.ms": 5,
                                   # Kafka's default partitioner (Java, aiokafka): events and privacy
                                   # requests of a subject land on the same partition number.
                                   "partitioner": "murmur2_random",
                                   "logger": logging.getLogger("streams.kafka.producer")})
        self.acked = 0
        self.failed = 0

    def _cb(self, err: Any, _msg: Any) -> None:
        if err is None:
            self.acked += 1
        else:
            self.failed += 1

    def send_raw(self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None = None) -> None:
        while True:
            try:
                self._producer.produce(self.topic, value, key, headers=headers or [], on_delivery=self._cb)
                return
            except BufferError:
                self._producer.poll(0.05)

    def send(self, event: dict[str, Any], fmt: WireFormat = "avro") -> None:
        self.send_raw(event_key(event), encode_event(self.registry, event, fmt))

    def send_many(self, events: Iterable[dict[str, Any]], fmt: WireFormat = "avro") -> int:
        n = 0
        for e in events:
            self.send(e, fmt)
            n += 1
        return n

    def flush(self, timeout: float = 30.0) -> None:
        remaining = self._producer.flush(timeout)
        if remaining:
            raise SinkUnavailable(f"{remaining} events not acknowledged by the broker within {timeout}s")
