"""Issue 16, the pure half: no text a producer chose reaches a DLQ record, a rejection's texts or a metric label.

Canaries in member names, nested map keys, enum symbols, union branch names,
header names and values, record keys and field values of JSON and Avro events
(``tests.dlq_canaries``); each search has its positive control (the same
search finds the canary in the raw input). The end-to-end half, through the
real worker, is ``tests/e2e/test_dlq_privacy.py``.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.dlq.keys import EphemeralDlqKey
from streams.dlq.record import DlqSealer
from streams.ingest.batch import BatchPipeline, RawRecord
from streams.ingest.processor import EventProcessor
from streams.records import Rejected, SourceRef
from streams.ops.metrics import Metrics
from streams.schema.registry import SchemaRegistry
from streams.settings import Settings
from streams.sinks.store import StoreWrite
from tests.dlq_canaries import KINDS, found, make_case

REPO = Path(__file__).resolve().parents[2]
SRC = SourceRef("events.raw", 0, 1)


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry.load_dir(REPO / "schemas")


@pytest.fixture(scope="module")
def proc(registry) -> EventProcessor:
    return EventProcessor(registry, ["acme", "globex"], 1 << 18)


def _texts(rej: Rejected, doc: bytes) -> dict[str, bytes]:
    return {"dlq": doc, "repr": repr(rej).encode(), "detail": rej.detail.encode(),
            "field": (rej.field or "").encode()}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(KINDS), letters=st.text("ABCDEFGHJKMNPQRSTUVWXYZabcdefghjkmnpqrstuvwxyz", min_size=6,
                                                    max_size=10),
       seed=st.integers(0, 2**32), depth=st.integers(0, 8))
def test_no_canary_in_a_dlq_record(registry, proc, kind, letters, seed, depth):
    canary = f"Canary{letters}"
    case = make_case(kind, canary, "acme", registry, random.Random(seed), depth=depth, headers=True)
    assert found(canary, case.raw_bytes())  # positive control: the search finds it in the input
    rej = proc.process(case.key, case.value, SRC)
    assert isinstance(rej, Rejected), kind
    sealer = DlqSealer.ephemeral()
    sealer.tenants = {"acme", "globex"}
    doc = sealer.encode(rej)
    for where, text in _texts(rej, doc).items():
        assert not found(canary, text), f"{kind}: canary in {where}: {text[:300]!r}"


def test_unknown_members_stay_useful(registry, proc):
    case = make_case("json_member", "CanaryUseful", "acme", registry, random.Random(1))
    members = json.loads(case.value)
    rej = proc.process(case.key, case.value, SRC)
    doc = json.loads(DlqSealer.ephemeral().encode(rej))
    assert doc["reason"] == "schema_violation" and doc["field"] == "<root>"
    assert doc["unknown_members"] == {"schema": "CustomerSignup", "count": 1, "positions": [len(members)],
                                      "members": len(members)}
    assert doc["detail"] == (f"field '<root>': expected only fields of CustomerSignup: 1 unknown member "
                             f"(#{len(members)} of {len(members)})")


def test_nested_unknown_member_path_is_schema_names_only(registry, proc):
    case = make_case("json_nested_key", "CanaryNested", "acme", registry, random.Random(2), depth=5)
    doc = json.loads(DlqSealer.ephemeral().encode(proc.process(case.key, case.value, SRC)))
    assert doc["field"] == "shipping_address" and doc["unknown_members"]["schema"] == "PostalAddress"


def test_fingerprints_are_keyed_stable_and_tenant_scoped(registry, proc):
    case = make_case("key_shaped", "CanaryFp", "acme", registry, random.Random(3))
    rej = proc.process(case.key, case.value, SRC)
    a, b = DlqSealer.ephemeral(), DlqSealer.ephemeral()
    da, da2, db = a.document(rej), a.document(rej), b.document(rej)
    assert da["payload_fingerprint"] == da2["payload_fingerprint"]  # de-duplicates under one key
    assert da["payload_fingerprint"] != db["payload_fingerprint"]  # another key: nothing to confirm a guess with
    assert a.keys.fingerprint("payload", "acme", case.value) != a.keys.fingerprint("payload", "globex", case.value)
    assert da["subject"] == da2["subject"] and da["subject"].startswith("p_")


def test_metric_labels_and_batch_records_carry_no_canary(registry, proc):
    """Through the batch step as the worker runs it (sinks faked): DLQ values, headers, keys, metric labels."""

    class Kafka:
        def __init__(self):
            self.records = []

        async def deliver_async(self, records):
            self.records += records

    class Store:
        async def write_batch(self, accepted, batch_id=""):
            return StoreWrite(len(accepted))

        async def add_stats(self, stats, leave=None):
            self.stats = stats
            return frozenset()

    class Keys:
        def subject_keys(self, tenant, subjects, create=True):
            return {s: bytes(64) for s in subjects}

    rng = random.Random(5)
    cases = [make_case(k, f"CanaryBatch{chr(65 + i % 26)}{i:03d}x", "acme", registry, rng, depth=i % 5, headers=True)
             for i, k in enumerate(KINDS * 2)]
    records = [RawRecord(c.key, c.value, "events.raw", 0, i) for i, c in enumerate(cases)]
    kafka, metrics = Kafka(), Metrics()
    p = BatchPipeline(Settings(), proc, kafka, Store(), Keys(), metrics,
                      dlq=DlqSealer(EphemeralDlqKey(), DlqSealer.ephemeral().pseudonyms, {"acme", "globex"}))
    result = asyncio.run(p.handle(records))
    assert sum(result.rejected.values()) == len(cases)
    out = b"\n".join((r.key or b"") + r.value + b"".join(n.encode() + v for n, v in r.headers) for r in kafka.records)
    page = metrics.render().encode()
    for c in cases:
        assert found(c.canary, c.raw_bytes())
        assert not found(c.canary, out), c.kind
        assert not found(c.canary, page), c.kind
