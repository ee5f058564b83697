"""The DLQ record: why and where, never the payload."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import time
from pathlib import Path

import pytest

from streams.dlq.reasons import Reason
from streams.dlq.record import DLQ_VERSION, decode_dlq, dlq_document, encode_dlq
from streams.ingest import samples
from streams.ingest.processor import EventProcessor
from streams.records import Rejected, SourceRef, Withheld
from streams.ingest.producer import encode_event
from streams.schema.registry import SchemaRegistry

REPO = Path(__file__).resolve().parents[2]
CANARY = "CANARY-7731@example.com"
SRC = SourceRef(topic="events.raw", partition=1, offset=42, timestamp_ms=1_700_000_000_000)

EXPECTED_KEYS = {"v", "reason", "detail", "field", "unknown_members", "tenant", "subject", "event_type",
                 "schema_fingerprint", "event_ref", "source", "key", "payload_size", "payload_fingerprint",
                 "fingerprint_key", "rejected_at_ms"}


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry.load_dir(REPO / "schemas")


def _rejected(registry, fmt="avro", tenant="acme") -> tuple[Rejected, bytes]:
    event = samples.signup(tenant, "u1", random.Random(3), email=CANARY, full_name=CANARY)
    value = encode_event(registry, event, fmt)
    rej = EventProcessor(registry, ["acme"], 1 << 20).process(b"acme/other", value, SRC)
    assert isinstance(rej, Rejected)
    return rej, value


@pytest.mark.parametrize("fmt", ["avro", "json"])
def test_document_fields(registry, fmt):
    rej, value = _rejected(registry, fmt)
    doc = dlq_document(rej, now_ms=1_750_000_000_000)
    assert set(doc) == EXPECTED_KEYS
    assert doc["v"] == DLQ_VERSION == 2
    assert doc["reason"] == "key_mismatch"
    assert doc["source"] == {"topic": "events.raw", "partition": 1, "offset": 42, "timestamp_ms": 1_700_000_000_000}
    assert doc["payload_size"] == len(value)
    assert doc["payload_fingerprint"].startswith("v0:") and len(doc["payload_fingerprint"]) == 3 + 32
    assert hashlib.sha256(value).hexdigest()[:32] not in json.dumps(doc)  # keyed: no plain hash to confirm a guess
    assert doc["fingerprint_key"] == "v0"
    assert doc["key"]["shape"] == "tenant/subject" and doc["key"]["tenant"] == "acme"
    assert doc["key"]["subject"].startswith("p_") and "other" not in json.dumps(doc["key"])
    assert doc["subject"].startswith("p_") and doc["subject"] != doc["key"]["subject"]  # u1 vs other
    assert doc["event_ref"].startswith("v0:") and rej.event_id not in json.dumps(doc)
    assert doc["tenant"] == "acme" and doc["event_type"] == "customer_signup"
    assert doc["schema_fingerprint"] == registry.by_name("customer_signup").fingerprint_hex
    assert doc["rejected_at_ms"] == 1_750_000_000_000


@pytest.mark.parametrize("fmt", ["avro", "json"])
def test_no_payload(registry, fmt):
    rej, value = _rejected(registry, fmt)
    raw = encode_dlq(rej, now_ms=1)
    assert CANARY.encode() not in raw
    assert value not in raw and value.hex() not in raw.decode()
    doc = decode_dlq(raw)
    assert not {"payload", "value", "event", "body", "raw"} & set(doc)
    # nor the payload in another encoding
    assert base64.b64encode(value).decode()[:24] not in raw.decode()


def test_round_trip_and_compact(registry):
    rej, _ = _rejected(registry)
    raw = encode_dlq(rej, now_ms=5)
    assert raw == json.dumps(dlq_document(rej, now_ms=5), separators=(",", ":")).encode()
    assert b'": ' not in raw and b'", "' not in raw
    assert decode_dlq(raw) == dlq_document(rej, now_ms=5)
    assert json.loads(raw)["reason"] == rej.reason.value


def test_rejected_at_defaults_to_now(registry):
    rej, _ = _rejected(registry)
    before = int(time.time() * 1000)
    doc = dlq_document(rej)
    assert before <= doc["rejected_at_ms"] <= int(time.time() * 1000)


def test_empty_value_document():
    rej = Rejected(reason=Reason.UNDECODABLE, detail="empty value", source=SourceRef("events.raw", 0, 7),
                   payload_size=0)
    doc = decode_dlq(encode_dlq(rej, now_ms=0))
    assert doc["reason"] == "undecodable" and doc["payload_size"] == 0 and doc["payload_fingerprint"] is None
    assert doc["key"] is None and doc["field"] is None
    assert doc["source"] == {"topic": "events.raw", "partition": 0, "offset": 7, "timestamp_ms": None}


@pytest.mark.parametrize("reason", list(Reason))
def test_every_reason_serialises(reason):
    rej = Rejected(reason=reason, detail="d", source=SRC, payload_size=3, payload=Withheld(b"abc"),
                   field="f" if reason is Reason.SCHEMA_VIOLATION else None)
    assert decode_dlq(encode_dlq(rej, now_ms=0))["reason"] == reason.value
