"""The topic an event arrived on says which tenant sent it (a tenant's raw topic is writable
only by that tenant's producer principal): an event naming another tenant is rejected."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.dlq.reasons import Reason
from streams.ingest import samples
from streams.ingest.batch import RawRecord
from streams.ingest.processor import EventProcessor
from streams.records import Accepted, Rejected, SourceRef
from streams.ingest.producer import encode_event, event_key
from streams.ingest.tenant_raw import next_offsets, tenant_raw_pattern
from streams.schema.registry import SchemaRegistry
from streams.settings import Settings

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
S = Settings()


@pytest.fixture(scope="module")
def proc() -> EventProcessor:
    return EventProcessor(SchemaRegistry.load_dir(SCHEMAS), ["acme", "globex"], 1 << 20,
                          sender_of=S.tenant_of_raw_topic)


def _event(tenant: str):
    return samples.signup(tenant, "u1")


@pytest.mark.parametrize("fmt", ["avro", "json"])
def test_an_event_claiming_another_tenant_on_a_tenant_raw_topic_is_rejected(proc, fmt):
    ev = _event("globex")
    src = SourceRef(S.tenant_raw_topic("acme"), 0, 7)
    out = proc.process(event_key(ev), encode_event(proc.registry, ev, fmt), src)
    assert isinstance(out, Rejected) and out.reason is Reason.TENANT_MISMATCH
    assert out.tenant is None  # not attributed to the tenant it claims to be


@pytest.mark.parametrize("topic", [S.tenant_raw_topic("acme"), S.raw_topic])
def test_own_tenant_on_its_raw_topic_and_any_tenant_on_the_shared_one_pass(proc, topic):
    ev = _event("acme")
    out = proc.process(event_key(ev), encode_event(proc.registry, ev, "avro"), SourceRef(topic, 0, 1))
    assert isinstance(out, Accepted) and out.tenant == "acme"


def test_raw_topic_names_map_to_their_tenant_only():
    assert S.tenant_of_raw_topic("events.raw.acme") == "acme"
    assert S.tenant_of_raw_topic("events.raw") is None
    assert S.tenant_of_raw_topic("events.raw.") is None
    assert S.tenant_of_raw_topic("events.rawacme") is None
    assert S.tenant_of_raw_topic("tenant.acme.events") is None


def test_subscription_pattern_matches_tenant_raw_topics_only():
    import re

    pat = re.compile(tenant_raw_pattern(S))
    assert pat.match("events.raw.acme") and pat.match("events.raw.a-1")
    for other in ("events.raw", "events.rawacme", "events.raw.Acme", "xevents.raw.acme", "tenant.acme.events",
                  "events.raw.acme.x", "events.dlq"):
        assert not pat.match(other), other


def test_next_offsets_takes_the_highest_per_topic_partition():
    recs = [RawRecord(None, b"", "events.raw.a", 0, 5), RawRecord(None, b"", "events.raw.a", 0, 9),
            RawRecord(None, b"", "events.raw.b", 0, 3), RawRecord(None, b"", "events.raw.a", 1, 1)]
    assert next_offsets(recs) == {("events.raw.a", 0): 10, ("events.raw.b", 0): 4, ("events.raw.a", 1): 2}
