"""The DLQ record: a JSON document describing why an event was rejected and where it was.

It deliberately carries no payload, only its size and SHA-256, so an operator
can find the original record on ``events.raw`` (topic, partition, offset)
while it is retained there, and nothing in the DLQ is personal data.
"""

from __future__ import annotations

import json
import time
from typing import Any

from streams.ingest.processor import Rejected

DLQ_VERSION = 1


def dlq_document(rej: Rejected, now_ms: int | None = None) -> dict[str, Any]:
    return {
        "v": DLQ_VERSION,
        "reason": rej.reason.value,
        "detail": rej.detail,
        "field": rej.field,
        "tenant": rej.tenant,
        "event_id": rej.event_id,
        "event_type": rej.event_type,
        "schema_fingerprint": rej.schema_fingerprint,
        "source": {"topic": rej.source.topic, "partition": rej.source.partition,
                   "offset": rej.source.offset, "timestamp_ms": rej.source.timestamp_ms},
        "key": rej.key_hint,
        "payload_size": rej.payload_size,
        "payload_sha256": rej.payload_sha256,
        "rejected_at_ms": now_ms if now_ms is not None else int(time.time() * 1000),
    }


def encode_dlq(rej: Rejected, now_ms: int | None = None) -> bytes:
    return json.dumps(dlq_document(rej, now_ms), separators=(",", ":")).encode()


def decode_dlq(value: bytes) -> dict[str, Any]:
    return json.loads(value)
