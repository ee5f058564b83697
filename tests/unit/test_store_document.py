"""The store's JSON document of a clean event, and its Redis key layout."""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

import pytest

from streams.ingest import samples
from streams.ingest.processor import EventProcessor
from streams.records import Accepted, SourceRef
from streams.ingest.producer import encode_event, event_key
from streams.schema.registry import SchemaRegistry
from streams.sinks import store_keys as K
from streams.sinks.store import _jsonable, store_document

REPO = Path(__file__).resolve().parents[2]
SRC = SourceRef("events.raw", 0, 5)


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry.load_dir(REPO / "schemas")


SUBJECT_KEY = bytes(range(64))  # one fixed key: tokens are deterministic per subject key


def _accepted(registry, maker, fmt="avro", **overrides) -> tuple[Accepted, dict]:
    event = maker("acme", "u9", random.Random(4), **overrides)
    a = EventProcessor(registry, ["acme"], 1 << 20).process(event_key(event), encode_event(registry, event, fmt),
                                                            SRC, now_ms=1_750_000_000_000,
                                                            subject_key=lambda t, s: SUBJECT_KEY)
    assert isinstance(a, Accepted)
    return a, event


@pytest.mark.parametrize("fmt", ["avro", "json"])
@pytest.mark.parametrize("maker", [samples.signup, samples.order, samples.support], ids=lambda m: m.__name__)
def test_document(registry, maker, fmt):
    a, event = _accepted(registry, maker, fmt)
    doc = json.loads(store_document(a))
    assert set(doc) == {"event_id", "event_type", "tenant", "subject", "event_time_ms", "schema", "event"}
    assert doc["event_id"] == event["event_id"] == doc["event"]["event_id"]
    assert (doc["tenant"], doc["subject"]) == ("acme", "u9")
    assert doc["event_time_ms"] == event["event_time"]
    assert doc["schema"] == a.clean_entry.fullname and ".clean." in doc["schema"]
    t = dt.datetime.fromisoformat(doc["event"]["event_time"])
    assert t.utcoffset() == dt.timedelta(0)
    assert (t - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(milliseconds=1) == event["event_time"]
    assert doc["event"]["lineage"]["processed_at"] == 1_750_000_000_000
    assert doc["event"]["lineage"]["source_offset"] == 5


def test_document_is_the_same_for_both_wire_formats(registry):
    a1, _ = _accepted(registry, samples.signup, "avro", event_time=1_700_000_000_123)
    a2, _ = _accepted(registry, samples.signup, "json", event_time=1_700_000_000_123)
    assert store_document(a1) == store_document(a2)


def test_jsonable():
    naive = dt.datetime(2024, 1, 2, 3, 4, 5, 678901)
    out = _jsonable({"a": [naive, dt.date(2024, 2, 29), b"\x00\xff", {"b": None}], "n": 1.5})
    assert out == {"a": ["2024-01-02T03:04:05.678+00:00", "2024-02-29", "AP8=", {"b": None}], "n": 1.5}
    json.dumps(out)  # serialisable


def test_store_keys():
    assert K.store_prefix("acme") == "t:{acme}:"
    assert K.event_key("acme", "e1") == "t:{acme}:ev:e1"
    assert K.subject_index("acme", "u1") == "t:{acme}:subj:u1"
    assert K.type_index("acme", "order_placed") == "t:{acme}:type:order_placed"
    assert K.time_index("acme") == "t:{acme}:time"
    for key in (K.event_key("acme", "x"), K.subject_index("acme", "x"), K.type_index("acme", "x"), K.time_index("acme")):
        assert key.startswith(K.store_prefix("acme"))
        assert not key.startswith(K.store_prefix("acm"))
