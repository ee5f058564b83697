"""The transform registry: built-ins by name, unknown names fail at load, and a new transform is one class.

``test_a_new_transform_is_one_class_and_one_registration`` is the worked example
behind README "Extending: adding a transform": a test-only ``reverse`` transform
is registered in one place (the ``reverse`` fixture) and an event goes through a
schema that uses it, from raw JSON to the decoded clean event.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Iterator

import pytest

from streams.ingest.processor import Accepted, EventProcessor, SourceRef
from streams.ingest.producer import encode_event
from streams.privacy.exceptions import PolicyError
from streams.privacy.policy import clean_field_doc, clean_field_type, rules_of
from streams.privacy.transforms import (BUILTINS, REGISTRY, FieldRule, PolicyApplier, StringTransform, SubjectCipher,
                                        Transform, lookup, register)
from streams.schema import codec
from streams.schema.registry import SchemaRegistry, make_entry
from streams.settings import REPO_ROOT

SRC = SourceRef(topic="events.raw", partition=0, offset=1, timestamp_ms=1_700_000_000_000)
NOW = 1_750_000_000_000


class Reverse(StringTransform):
    """Test only: the string backwards (not a privacy transform; it shows the extension point)."""

    name = "reverse"
    doc = "the string backwards (test only)"

    def field_doc(self, field: FieldRule) -> str:
        return "reversed"

    def apply(self, value: Any, field: FieldRule, cipher: SubjectCipher) -> Any:
        return value[::-1]


@pytest.fixture
def reverse() -> Iterator[Transform]:
    transform = register(Reverse())  # the one registration line a new transform needs
    try:
        yield transform
    finally:
        REGISTRY.pop(transform.name)  # the registry is process-wide: leave it as we found it


def _record(*fields: dict[str, Any], name: str = "T") -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "io.streams.tests", "fields": list(fields)}


NOTE_SOURCE = _record(
    {"name": "event_id", "type": {"type": "string", "logicalType": "uuid"}},
    {"name": "tenant_id", "type": "string"},
    {"name": "subject_id", "type": "string"},
    {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "purpose", "type": "string", "default": "analytics"},
    {"name": "nickname", "type": ["null", "string"], "default": None, "pii": "name", "transform": "reverse"},
    {"name": "email", "type": "string", "pii": "email", "transform": "tokenize"},
    name="NoteTaken",
)


def test_the_builtins_are_registered_in_the_documented_order():
    assert [t.name for t in BUILTINS] == ["tokenize", "hash", "mask", "redact", "generalize"]
    assert all(REGISTRY[t.name] is t for t in BUILTINS)
    for t in BUILTINS:
        assert t.doc and "\n" not in t.doc, t  # one line, for the README and listings


def test_the_readme_documents_every_builtin():
    readme = (REPO_ROOT / "README.md").read_text()
    table = readme.split("### The schema is the policy", 1)[1].split("\n\n", 3)[2]
    assert re.findall(r"^\| `([a-z_]+)` \|", table, re.M) == [t.name for t in BUILTINS]


def test_an_unknown_transform_is_an_error_at_load_never_a_fall_through():
    with pytest.raises(PolicyError, match=r"field 'email': unknown transform 'shred' \(known: tokenize, hash"):
        rules_of(_record({"name": "email", "type": "string", "pii": "email", "transform": "shred"}))
    with pytest.raises(PolicyError, match="unknown transform 'shred'"):
        PolicyApplier([FieldRule("email", "email", "shred", False, "string")])  # rules not from rules_of
    with pytest.raises(PolicyError, match="unknown transform"):
        lookup(["not", "a", "name"])  # type: ignore[arg-type]


def test_register_refuses_a_taken_or_malformed_name():
    with pytest.raises(ValueError, match="already registered"):
        register(type("Tokenize2", (Reverse,), {"name": "tokenize"})())
    for bad in ("", "Reverse", "re-verse", "x" * 33):
        with pytest.raises(ValueError, match="must be lower case"):
            register(type("Bad", (Reverse,), {"name": bad})())
    assert "reverse" not in REGISTRY


def test_a_check_problem_names_the_field(reverse):
    with pytest.raises(PolicyError, match="field 'age': reverse needs a string field"):
        rules_of(_record({"name": "age", "type": "int", "pii": "identifier", "transform": "reverse"}))


def test_a_new_transform_is_one_class_and_one_registration(reverse):
    raw = SchemaRegistry([make_entry(NOTE_SOURCE)])
    proc = EventProcessor(raw, ["acme"], 256 * 1024)  # loads the policy: "reverse" must be known by now
    clean_entry = proc.clean_entry(raw.by_name("note_taken"))
    nickname = next(f for f in clean_entry.source["fields"] if f["name"] == "nickname")
    assert nickname["type"] == ["null", "string"] and nickname["doc"] == "PII (name) reversed."

    event = {"schema": "note_taken", "event_id": str(uuid.UUID(int=7, version=4)), "tenant_id": "acme",
             "subject_id": "u1", "event_time": 1_700_000_000_000, "nickname": "Ada", "email": "ada@example.com"}
    accepted = proc.process(b"acme/u1", encode_event(raw, event, "json"), SRC, now_ms=NOW)
    assert isinstance(accepted, Accepted), accepted
    _, clean = codec.decode(SchemaRegistry([clean_entry]), accepted.value)
    assert clean["nickname"] == "adA"
    assert clean["email"].startswith("tok.email.")  # the built-ins work beside it


def test_the_policy_asks_the_rule_s_transform(reverse):
    rule = rules_of(_record({"name": "nick", "type": "string", "pii": "name", "transform": "reverse"}))[0]
    assert clean_field_type(rule) == "string" and clean_field_doc(rule) == "PII (name) reversed."
