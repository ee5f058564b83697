"""The schema registry: loading schemas/<type>/v<N>.avsc, Avro-spec fingerprints, lookups, versions, load errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from fastavro.schema import to_parsing_canonical_form

from streams.ingest import samples
from streams.ingest.producer import encode_event
from streams.schema import codec
from streams.schema.exceptions import SchemaFileError
from streams.schema.registry import SchemaRegistry, event_type_of, make_entry

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "schemas"

# --------------------------------------------------------------------------------------------
# An independent implementation of the Avro spec's schema fingerprint:
# Parsing Canonical Form + CRC-64-AVRO (Rabin), written from the specification text.
# --------------------------------------------------------------------------------------------

_EMPTY64 = 0xC15D213AA4D7A795
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def _rabin_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY64 & -(fp & 1))
        table.append(fp)
    return table


_TABLE = _rabin_table()


def crc64_avro(data: bytes) -> int:
    fp = _EMPTY64
    for b in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ b) & 0xFF]
    return fp


def _fullname(name: str, namespace: str | None) -> str:
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


def pcf(schema, namespace: str | None = None, seen: set[str] | None = None) -> str:
    """Parsing Canonical Form per the spec: PRIMITIVES, FULLNAMES, STRIP, ORDER, STRINGS, WHITESPACE."""
    seen = set() if seen is None else seen
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return json.dumps(schema)
        return json.dumps(_fullname(schema, namespace))
    if isinstance(schema, list):
        return "[" + ",".join(pcf(s, namespace, seen) for s in schema) + "]"
    t = schema["type"]
    if t in _PRIMITIVES:  # {"type": "string", "logicalType": ...} -> "string"
        return json.dumps(t)
    if t in ("record", "enum", "fixed"):
        ns = schema.get("namespace", namespace)
        full = _fullname(schema["name"], ns)
        if full in seen:
            return json.dumps(full)
        seen.add(full)
        inner_ns = full.rpartition(".")[0] or None
        parts = [f'"name":{json.dumps(full)}', f'"type":{json.dumps(t)}']
        if t == "record":
            fields = ",".join(
                "{" + f'"name":{json.dumps(f["name"])},"type":{pcf(f["type"], inner_ns, seen)}' + "}"
                for f in schema["fields"]
            )
            parts.append(f'"fields":[{fields}]')
        elif t == "enum":
            parts.append(f'"symbols":{json.dumps(schema["symbols"], separators=(",", ":"))}')
        else:
            parts.append(f'"size":{int(schema["size"])}')
        return "{" + ",".join(parts) + "}"
    if t == "array":
        return '{"type":"array","items":' + pcf(schema["items"], namespace, seen) + "}"
    if t == "map":
        return '{"type":"map","values":' + pcf(schema["values"], namespace, seen) + "}"
    return pcf(t, namespace, seen)


def spec_fingerprint(source) -> bytes:
    """CRC-64-AVRO of the canonical form, as the 8 little-endian bytes of single-object encoding."""
    return crc64_avro(pcf(source).encode()).to_bytes(8, "little")


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry.load_dir(SCHEMAS)


def _raw_sources() -> list[Path]:
    return sorted(SCHEMAS.glob("*/v*.avsc"))


# ------------------------------------------------------------------ the reference implementation


def test_rabin_matches_published_vectors():
    # Values from other Avro implementations' test suites (goavro's crc64avro_test.go).
    assert crc64_avro(b'"int"') == 0x7275D51A3F395C8F
    assert crc64_avro(b'"string"') == 0x8F014872634503C7


def test_pcf_strips_annotations_and_qualifies_names():
    src = {"type": "record", "name": "R", "namespace": "a.b", "doc": "x",
           "fields": [{"name": "f", "type": {"type": "string", "logicalType": "uuid"}, "pii": "email",
                       "default": "q"},
                      {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B"]}}]}
    assert pcf(src) == ('{"name":"a.b.R","type":"record","fields":[{"name":"f","type":"string"},'
                        '{"name":"e","type":{"name":"a.b.E","type":"enum","symbols":["A","B"]}}]}')


# ------------------------------------------------------------------ loading schemas/


def test_loads_every_raw_schema(registry):
    assert len(registry) == len(_raw_sources()) == 3
    assert {e.fullname for e in registry} == {
        "io.streams.events.CustomerSignup", "io.streams.events.OrderPlaced", "io.streams.events.SupportMessage"}
    assert {e.event_type for e in registry} == {"customer_signup", "order_placed", "support_message"}
    for e in registry:
        assert e.path is not None and e.path.parent == SCHEMAS / e.event_type and e.path.name == f"v{e.version}.avsc"
        assert e.source == json.loads(e.path.read_text())


@pytest.mark.parametrize("path", _raw_sources(), ids=lambda p: f"{p.parent.name}-{p.stem}")
def test_fingerprint_matches_avro_spec(registry, path):
    source = json.loads(path.read_text())
    entry = registry.by_name(source["name"])
    expected = spec_fingerprint(source)
    assert len(entry.fingerprint) == 8
    assert entry.fingerprint == expected
    assert entry.fingerprint_hex == expected.hex()
    # Our independent canonical form agrees with fastavro's too.
    assert pcf(source) == to_parsing_canonical_form(entry.parsed)


@pytest.mark.parametrize("maker", [samples.signup, samples.order, samples.support], ids=lambda m: m.__name__)
def test_single_object_header_bytes(registry, maker):
    event = maker("acme", "u1", random.Random(3))
    entry = registry.by_name(event["schema"])
    payload = encode_event(registry, event, "avro")
    assert payload[:2] == b"\xc3\x01"
    assert payload[2:10] == spec_fingerprint(json.loads(entry.path.read_text()))
    assert codec.decode(registry, payload)[0] is entry


def test_fingerprint_ignores_annotations_but_policy_version_does_not():
    src = json.loads((SCHEMAS / "customer_signup" / "v1.avsc").read_text())
    changed = json.loads(json.dumps(src))
    changed["fields"][5]["transform"] = "redact"  # full_name: tokenize -> redact
    changed["doc"] = "another doc"
    a, b = make_entry(src), make_entry(changed)
    assert a.fingerprint == b.fingerprint  # canonical form strips doc and custom attributes
    assert a.policy_version != b.policy_version  # ... but the policy changed
    assert len(a.policy_version) == 16 and int(a.policy_version, 16) >= 0
    assert make_entry(json.loads(json.dumps(src))).policy_version == a.policy_version  # deterministic


def test_fingerprint_changes_with_the_schema():
    src = json.loads((SCHEMAS / "support_message" / "v1.avsc").read_text())
    other = json.loads(json.dumps(src))
    other["fields"].append({"name": "extra", "type": "int", "default": 0})
    assert make_entry(src).fingerprint != make_entry(other).fingerprint


# ------------------------------------------------------------------ lookups


@pytest.mark.parametrize("alias", ["io.streams.events.OrderPlaced", "OrderPlaced", "order_placed"])
def test_lookup_by_any_name(registry, alias):
    entry = registry.by_name(alias)
    assert entry is not None and entry.fullname == "io.streams.events.OrderPlaced"
    assert registry.by_fingerprint(entry.fingerprint) is entry


@pytest.mark.parametrize("name", ["orderplaced", "order-placed", "io.streams.events.Nope", "", "ORDER_PLACED"])
def test_lookup_unknown_name(registry, name):
    assert registry.by_name(name) is None


def test_lookup_unknown_fingerprint(registry):
    assert registry.by_fingerprint(b"\x00" * 8) is None
    fp = registry.by_name("customer_signup").fingerprint
    assert registry.by_fingerprint(fp[:7]) is None
    assert registry.by_fingerprint(fp) is not None


@pytest.mark.parametrize("name,expected", [("CustomerSignup", "customer_signup"), ("OrderPlaced", "order_placed"),
                                           ("A", "a"), ("SupportMessage", "support_message")])
def test_event_type_of(name, expected):
    assert event_type_of(name) == expected


# ------------------------------------------------------------------ load errors


def _write(d: Path, name: str, content, event_type: str = "r") -> Path:
    """Write ``d/<event_type>/<name>`` (a version file when ``name`` is ``v<N>.avsc``)."""
    p = d / event_type / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(content if isinstance(content, str) else json.dumps(content))
    return p


def _signup() -> dict:
    return json.loads((SCHEMAS / "customer_signup" / "v1.avsc").read_text())


def test_same_canonical_form_in_two_versions_finds_the_later(tmp_path):
    src = _signup()
    _write(tmp_path, "v1.avsc", src, "customer_signup")
    _write(tmp_path, "v2.avsc", dict(src, doc="same canonical form, different doc"), "customer_signup")
    reg = SchemaRegistry.load_dir(tmp_path)
    v1, v2 = reg.versions("customer_signup")
    assert (v1.version, v2.version) == (1, 2) and v1.fingerprint == v2.fingerprint
    assert reg.by_fingerprint(v1.fingerprint) is v2 is reg.by_name("customer_signup") is reg.current(v1)


def test_two_entries_of_one_version_are_an_error():
    a = make_entry(_signup())
    with pytest.raises(SchemaFileError, match="two files are version 1 of customer_signup"):
        SchemaRegistry([a, make_entry(dict(_signup(), doc="other"))])


def test_every_version_is_loaded_and_the_latest_is_current(tmp_path):
    src = _signup()
    v2 = json.loads(json.dumps(src))
    v2["fields"].append({"name": "referrer", "type": ["null", "string"], "default": None, "pii": "none"})
    _write(tmp_path, "v1.avsc", src, "customer_signup")
    _write(tmp_path, "v2.avsc", v2, "customer_signup")
    _write(tmp_path, "v1.avsc", json.loads((SCHEMAS / "order_placed" / "v1.avsc").read_text()), "order_placed")
    reg = SchemaRegistry.load_dir(tmp_path)
    assert [(e.event_type, e.version) for e in reg.all_versions()] == [
        ("customer_signup", 1), ("customer_signup", 2), ("order_placed", 1)]
    assert [(e.event_type, e.version) for e in reg] == [("customer_signup", 2), ("order_placed", 1)]
    assert len(reg) == 2
    old, new = reg.versions("customer_signup")
    assert old.fingerprint != new.fingerprint
    assert reg.by_fingerprint(old.fingerprint) is old and reg.current(old) is new
    assert reg.by_name("CustomerSignup") is new and reg.versions("nope") == []


def test_the_flat_layout_is_an_error_saying_where_a_file_goes(tmp_path):
    (tmp_path / "order_placed.avsc").write_text((SCHEMAS / "order_placed" / "v1.avsc").read_text())
    with pytest.raises(SchemaFileError, match="move it to .*order_placed/v1.avsc"):
        SchemaRegistry.load_dir(tmp_path)


@pytest.mark.parametrize("name", ["V1.avsc", "v0.avsc", "v01.avsc", "1.avsc", "order_placed.avsc", "v1.x.avsc"])
def test_a_version_file_is_named_v_n(tmp_path, name):
    _write(tmp_path, name, json.loads((SCHEMAS / "order_placed" / "v1.avsc").read_text()), "order_placed")
    with pytest.raises(SchemaFileError, match="v<N>.avsc"):
        SchemaRegistry.load_dir(tmp_path)


def test_the_directory_names_the_event_type(tmp_path):
    _write(tmp_path, "v1.avsc", json.loads((SCHEMAS / "order_placed" / "v1.avsc").read_text()), "customer_signup")
    with pytest.raises(SchemaFileError, match="is event type order_placed, not customer_signup"):
        SchemaRegistry.load_dir(tmp_path)


def test_empty_directory_is_an_error(tmp_path):
    (tmp_path / "notes.txt").write_text("not a schema")
    (tmp_path / "clean").mkdir()
    with pytest.raises(SchemaFileError, match="no <event_type>/v<N>.avsc"):
        SchemaRegistry.load_dir(tmp_path)


def test_not_json_is_an_error(tmp_path):
    _write(tmp_path, "v1.avsc", '{"type": "record", ')
    with pytest.raises(SchemaFileError, match="not valid JSON") as ei:
        SchemaRegistry.load_dir(tmp_path)
    assert "v1.avsc" in str(ei.value)


@pytest.mark.parametrize("content", [
    {"type": "record", "name": "R", "fields": [{"name": "a", "type": "nosuchtype"}]},
    {"type": "enum", "name": "E", "symbols": ["A"]},  # valid Avro, but not a record
    {"type": "record", "name": "R", "fields": [{"name": "a", "type": "int", "default": "x"}]},
    {"type": "record", "name": "R", "fields": [{"name": "a"}]},
    {"type": "record", "fields": []},
    {"type": "record", "name": "R", "fields": [{"name": "a", "type": {"type": "enum", "name": "E"}}]},
], ids=["unknown-type", "top-level-enum", "bad-default", "field-without-type", "no-name", "enum-no-symbols"])
def test_invalid_schema_is_an_error(tmp_path, content):
    _write(tmp_path, "v1.avsc", content)
    with pytest.raises(SchemaFileError):
        SchemaRegistry.load_dir(tmp_path)


@pytest.mark.parametrize("content", ['"string"', '["null", "string"]'], ids=["primitive", "union"])
def test_non_record_top_level_primitive_is_a_schema_file_error(tmp_path, content):
    _write(tmp_path, "v1.avsc", content)
    with pytest.raises(SchemaFileError):
        SchemaRegistry.load_dir(tmp_path)


@pytest.mark.parametrize("content", [
    {"type": "record", "name": "R"},
    {"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}, {"name": "a", "type": "string"}]},
], ids=["no-fields", "duplicate-field"])
def test_spec_invalid_record_is_a_schema_file_error(tmp_path, content):
    _write(tmp_path, "v1.avsc", content)
    with pytest.raises(SchemaFileError):
        SchemaRegistry.load_dir(tmp_path)


def test_non_utf8_file_is_a_schema_file_error(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "v1.avsc").write_bytes(b"\xff\xfe{\x00")
    with pytest.raises(SchemaFileError):
        SchemaRegistry.load_dir(tmp_path)


def test_only_avsc_files_are_loaded(tmp_path):
    src = json.loads((SCHEMAS / "order_placed" / "v1.avsc").read_text())
    _write(tmp_path, "v1.avsc", src, "order_placed")
    _write(tmp_path, "README.md", "# not a schema", "order_placed")
    _write(tmp_path, "broken.json", "{")
    reg = SchemaRegistry.load_dir(tmp_path)
    assert [e.event_type for e in reg] == ["order_placed"]
