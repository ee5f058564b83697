"""A schema change on the real broker and Redis: events written with v1 and with v2 both reach the tenant
topic and the store, and the consumer decodes every record, those from before the change included."""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest

from streams.consumer.clean_decoder import CleanDecoder
from streams.ingest import samples
from streams.ingest.batch import RawRecord
from streams.ingest.producer import encode_event, event_key
from streams.schema import codec
from streams.schema.clean import derive_clean, write_clean_dir
from streams.schema.json_datum import SCHEMA_KEY, to_datum
from streams.schema.registry import SchemaRegistry
from streams.settings import REPO_ROOT
from streams.sinks.store import StoreReader
from tests.kafka_read import read_topic
from tests.runtime import fresh_runtime

pytestmark = pytest.mark.integration


def _v1_payload(entry, event: dict) -> bytes:
    """What a producer not yet upgraded writes: the event with v1 of its schema."""
    return codec.encode(entry, to_datum(entry.expanded, {k: v for k, v in event.items() if k != SCHEMA_KEY}, ""))


def _handle(rt, records: list[RawRecord]):
    return asyncio.run(asyncio.wait_for(rt.pipeline.handle(records), 60))


def test_events_of_v1_and_v2_flow_and_decode_across_the_change(make_settings, tmp_path):
    schemas = tmp_path / "schemas"
    shutil.copytree(REPO_ROOT / "schemas", schemas)
    s = make_settings(schemas_dir=schemas)
    tenant = sorted(s.tenants)[0]
    v1 = SchemaRegistry.load_dir(schemas).by_name("customer_signup")

    # Before the change: a worker with v1 delivers two events.
    before = [samples.signup(tenant, f"u-{i}") for i in range(2)]
    rt, _ = fresh_runtime(s)
    result = _handle(rt, [RawRecord(event_key(e), _v1_payload(v1, e), s.raw_topic, 0, i) for i, e in enumerate(before)])
    assert result.accepted == 2 and not result.rejected

    # The change: v2 adds an optional field with a default; its clean version is derived.
    source = json.loads((schemas / "customer_signup" / "v1.avsc").read_text())
    source["fields"].append({"name": "loyalty_tier", "type": ["null", "string"], "default": None,
                             "doc": "The customer's loyalty programme tier, if any."})
    (schemas / "customer_signup" / "v2.avsc").write_text(json.dumps(source, indent=2))
    registry = SchemaRegistry.load_dir(schemas)
    write_clean_dir(registry, schemas / "clean")
    v2 = registry.by_name("customer_signup")
    assert v2.version == 2 and v2.fingerprint != v1.fingerprint

    # After it, a restarted worker gets events still in flight from v1 producers, and v2 ones (Avro and JSON).
    in_flight = [samples.signup(tenant, f"u-{i}") for i in range(2, 4)]
    upgraded = [samples.signup(tenant, "u-4", loyalty_tier="gold"), samples.signup(tenant, "u-5")]
    records = [RawRecord(event_key(e), _v1_payload(v1, e), s.raw_topic, 0, 2 + i) for i, e in enumerate(in_flight)]
    records += [RawRecord(event_key(upgraded[0]), encode_event(registry, upgraded[0], "avro"), s.raw_topic, 0, 4),
                RawRecord(event_key(upgraded[1]), encode_event(registry, upgraded[1], "json"), s.raw_topic, 0, 5)]
    rt, _ = fresh_runtime(s)
    result = _handle(rt, records)
    assert result.accepted == 4 and not result.rejected  # none went to the DLQ as unknown_schema

    # The tenant topic: the first two in clean v1, the rest in clean v2; the consumer decodes them all.
    events = before + in_flight + upgraded
    got = read_topic(s.kafka_bootstrap, s.tenant_topic(tenant), expect=len(events), timeout=60)
    assert len(got) == len(events)
    clean_v1, clean_v2 = (derive_clean(e) for e in registry.versions("customer_signup"))
    decoder = CleanDecoder.from_dir(schemas / "clean")
    by_id = {}
    for m in got:
        name, event = decoder.decode(m.value())
        assert name == clean_v2.fullname
        by_id[str(event["event_id"])] = (m.value()[2:10], event)
    assert set(by_id) == {e["event_id"] for e in events}
    for e in before:
        assert by_id[e["event_id"]][0] == clean_v1.fingerprint
    for e in in_flight + upgraded:
        assert by_id[e["event_id"]][0] == clean_v2.fingerprint
    for e in before + in_flight:
        fp, event = by_id[e["event_id"]]
        assert event["loyalty_tier"] is None and event["lineage"]["raw_schema_fingerprint"] == v1.fingerprint_hex
        assert event["email"].startswith("tok.email.") and e["email"] not in json.dumps(event, default=str)
    assert by_id[upgraded[0]["event_id"]][1]["loyalty_tier"] == "gold"
    assert by_id[upgraded[0]["event_id"]][1]["lineage"]["raw_schema_fingerprint"] == v2.fingerprint_hex
    assert {by_id[e["event_id"]][1]["lineage"]["policy_version"] for e in in_flight + upgraded} == {v2.policy_version}

    # And the store holds every one, in the latest clean version.
    reader = StoreReader.from_settings(s)
    for e in events:
        doc = reader.get(tenant, e["event_id"])
        assert doc is not None and doc["schema"] == clean_v2.fullname
