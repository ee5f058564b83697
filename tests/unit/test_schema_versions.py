"""Events written with any kept schema version are read as the latest one; the clean output is the latest
clean version; the consumer decodes every kept clean version."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from streams.consumer.clean_decoder import CleanDecoder
from streams.ingest import samples
from streams.ingest.processor import EventProcessor
from streams.ingest.producer import event_key
from streams.records import Accepted, Rejected, SourceRef
from streams.schema import codec
from streams.schema.clean import derive_clean, write_clean_dir
from streams.schema.exceptions import SchemaViolation, UnknownSchemaError
from streams.schema.json_datum import SCHEMA_KEY, read_json, to_datum
from streams.schema.registry import SchemaRegistry

REPO = Path(__file__).resolve().parents[2]
SRC = SourceRef(topic="events.raw", partition=0, offset=7)


def _v1() -> dict:
    return json.loads((REPO / "schemas" / "customer_signup" / "v1.avsc").read_text())


def _with_v2(tmp_path: Path, v2: dict) -> SchemaRegistry:
    d = tmp_path / "schemas"
    for name in ("customer_signup", "order_placed", "support_message"):
        (d / name).mkdir(parents=True)
        (d / name / "v1.avsc").write_text((REPO / "schemas" / name / "v1.avsc").read_text())
    (d / "customer_signup" / "v2.avsc").write_text(json.dumps(v2))
    reg = SchemaRegistry.load_dir(d)
    write_clean_dir(reg, d / "clean")
    return reg


def _added_field() -> dict:
    v2 = _v1()
    v2["fields"].append({"name": "loyalty_tier", "type": ["null", "string"], "default": None})
    return v2


def _removed_field() -> dict:
    v2 = _v1()
    v2["fields"] = [f for f in v2["fields"] if f["name"] != "marketing_opt_in"]
    return v2


def _event(**overrides) -> dict:
    return samples.signup("acme", "u-1", random.Random(5), **overrides)


def _payload(entry, event: dict) -> bytes:
    return codec.encode(entry, to_datum(entry.expanded, {k: v for k, v in event.items() if k != SCHEMA_KEY}, ""))


def test_a_v1_payload_is_read_as_v2(tmp_path):
    reg = _with_v2(tmp_path, _added_field())
    v1, v2 = reg.versions("customer_signup")
    d = codec.read(reg, _payload(v1, _event()))
    assert (d.writer, d.entry) == (v1, v2)
    assert d.datum["loyalty_tier"] is None and d.datum["email"] == _event()["email"]
    assert codec.decode(reg, _payload(v1, _event()))[0] is v2


def test_a_v2_payload_is_read_as_itself(tmp_path):
    reg = _with_v2(tmp_path, _added_field())
    v2 = reg.by_name("customer_signup")
    d = codec.read(reg, _payload(v2, _event(loyalty_tier="gold")))
    assert d.writer is d.entry is v2 and d.datum["loyalty_tier"] == "gold"


def test_a_removed_field_is_dropped_when_reading_v1(tmp_path):
    reg = _with_v2(tmp_path, _removed_field())
    v1, _ = reg.versions("customer_signup")
    d = codec.read(reg, _payload(v1, _event(marketing_opt_in=True)))
    assert "marketing_opt_in" not in d.datum and d.writer is v1


def test_a_json_event_of_an_earlier_version_is_resolved(tmp_path):
    reg = _with_v2(tmp_path, _removed_field())
    v1, v2 = reg.versions("customer_signup")
    body = json.dumps(_event(marketing_opt_in=True), default=str).encode()
    d = read_json(reg, body)
    assert (d.writer, d.entry) == (v1, v2) and "marketing_opt_in" not in d.datum
    fits_latest = json.dumps({k: v for k, v in _event().items() if k != "marketing_opt_in"}, default=str).encode()
    assert read_json(reg, fits_latest).writer is v2


def test_a_json_event_no_version_fits_reports_the_latest_versions_violation(tmp_path):
    reg = _with_v2(tmp_path, _added_field())
    body = json.dumps(_event(country=7), default=str).encode()
    with pytest.raises(SchemaViolation) as ei:
        read_json(reg, body)
    assert ei.value.field == "country"


def test_an_unknown_fingerprint_is_still_unknown(tmp_path):
    reg = _with_v2(tmp_path, _added_field())
    payload = _payload(reg.by_name("customer_signup"), _event())
    with pytest.raises(UnknownSchemaError):
        codec.read(reg, payload[:2] + b"\x00" * 8 + payload[10:])


@pytest.mark.parametrize("written_with", [1, 2])
def test_the_processor_writes_the_latest_clean_version_for_either_version(tmp_path, written_with):
    reg = _with_v2(tmp_path, _added_field())
    writer = reg.versions("customer_signup")[written_with - 1]
    latest = reg.by_name("customer_signup")
    proc = EventProcessor(reg, ["acme"], 1 << 20)
    event = _event()
    out = proc.process(event_key(event), _payload(writer, event), SRC, now_ms=1)
    assert isinstance(out, Accepted), out
    assert out.clean_entry.fingerprint == derive_clean(latest).fingerprint
    assert out.value[2:10] == out.clean_entry.fingerprint
    assert out.clean_datum["loyalty_tier"] is None
    assert out.clean_datum["lineage"]["raw_schema_fingerprint"] == writer.fingerprint_hex
    assert out.clean_datum["lineage"]["policy_version"] == latest.policy_version
    assert out.clean_datum["email"].startswith("tok.email.")


def test_a_rejection_names_the_writers_fingerprint(tmp_path):
    reg = _with_v2(tmp_path, _added_field())
    v1 = reg.versions("customer_signup")[0]
    proc = EventProcessor(reg, ["acme"], 1 << 20)
    out = proc.process(b"acme/someone-else", _payload(v1, _event()), SRC)
    assert isinstance(out, Rejected) and out.schema_fingerprint == v1.fingerprint_hex


def test_the_consumer_decodes_every_kept_clean_version(tmp_path):
    reg = _with_v2(tmp_path, _added_field())
    clean_v1, clean_v2 = (derive_clean(e) for e in reg.versions("customer_signup"))
    decoder = CleanDecoder.from_dir(tmp_path / "schemas" / "clean")
    proc_v1 = EventProcessor(SchemaRegistry([reg.versions("customer_signup")[0]]), ["acme"], 1 << 20)
    event = _event()
    old = proc_v1.process(event_key(event), _payload(reg.versions("customer_signup")[0], event), SRC, now_ms=1)
    assert old.value[2:10] == clean_v1.fingerprint  # written before the change, by a v1 pipeline
    name, decoded = decoder.decode(old.value)
    assert name == clean_v2.fullname and decoded["loyalty_tier"] is None
    new = EventProcessor(reg, ["acme"], 1 << 20).process(event_key(event), _payload(reg.by_name("customer_signup"),
                                                                                    event), SRC, now_ms=1)
    assert new.value[2:10] == clean_v2.fingerprint
    assert decoder.decode(new.value)[1]["event_id"] == decoded["event_id"]


def test_the_example_consumer_decodes_every_kept_clean_version(tmp_path):
    import runpy

    example = runpy.run_path(str(REPO / "examples" / "consume_tenant_stream.py"))  # __main__ not run
    reg = _with_v2(tmp_path, _added_field())
    v1, v2 = reg.versions("customer_signup")
    schemas = example["load_schemas"](str(tmp_path / "schemas" / "clean"))
    event = _event()
    for writer, registry in ((v1, SchemaRegistry([v1])), (v2, reg)):
        out = EventProcessor(registry, ["acme"], 1 << 20).process(event_key(event), _payload(writer, event), SRC)
        name, decoded = example["decode"](schemas, out.value)
        assert name == derive_clean(v2).fullname
        assert decoded["loyalty_tier"] is None and str(decoded["event_id"]) == event["event_id"]


def test_the_readme_consumer_decodes_every_kept_clean_version(tmp_path, monkeypatch):
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Reading a tenant stream", 1)[1]
    code = section.split("```python\n", 1)[1].split("consumer = Consumer(", 1)[0]  # the schema part
    reg = _with_v2(tmp_path, _added_field())
    v1, v2 = reg.versions("customer_signup")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    event = _event()
    out = EventProcessor(SchemaRegistry([v1]), ["acme"], 1 << 20).process(event_key(event), _payload(v1, event), SRC)
    value = out.value
    # The snippet's two decoding lines, as the README has them.
    assert 'writer = writers[value[2:10]]' in section
    assert 'fastavro.schemaless_reader(io.BytesIO(value[10:]), writer, latest[writer["name"]])' in section
    writer = scope["writers"][value[2:10]]
    decoded = scope["fastavro"].schemaless_reader(scope["io"].BytesIO(value[10:]), writer, scope["latest"][writer["name"]])
    assert decoded["loyalty_tier"] is None and str(decoded["event_id"]) == event["event_id"]
    assert len(scope["writers"]) == 4 and scope["latest"]["io.streams.events.clean.CustomerSignup"]["fields"][-2][
        "name"] == "loyalty_tier"
