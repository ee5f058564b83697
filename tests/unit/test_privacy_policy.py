"""The schema is the policy: annotations parsed, checked, and turned into clean types; the lint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.privacy.exceptions import PolicyError
from streams.privacy.lint import lint_schema
from streams.privacy.policy import clean_field_type, derive_clean_fields, rules_of
from streams.privacy.transforms import BUILTINS
from streams.settings import REPO_ROOT

SCHEMAS = sorted((REPO_ROOT / "schemas").glob("*/v*.avsc"))  # every published version


def _record(*fields):
    return {"type": "record", "name": "T", "namespace": "x", "fields": list(fields)}


def test_published_schemas_pass_the_lint():
    # The suite fails when anyone adds a PII-looking field without an annotation.
    for path in SCHEMAS:
        assert lint_schema(json.loads(path.read_text())) == [], path


def test_every_transform_is_used_by_some_published_schema():
    used = {r.transform for p in SCHEMAS for r in rules_of(json.loads(p.read_text()))}
    assert used == {t.name for t in BUILTINS}


@pytest.mark.parametrize("name,kind", [
    ("email", "email"), ("customerEmail", "email"), ("phone_number", "phone"), ("full_name", "name"),
    ("street", "address"), ("zip_code", "address"), ("date_of_birth", "birth_date"), ("dob", "birth_date"),
    ("comment", "free_text"), ("message_body", "free_text"), ("client_ip", "ip_address"), ("iban", "identifier"),
])
def test_lint_flags_unannotated_pii_looking_fields(name, kind):
    findings = lint_schema(_record({"name": name, "type": "string"}))
    assert [(f.path, f.looks_like) for f in findings] == [(name, kind)]
    assert "no 'pii' annotation" in str(findings[0])


def test_lint_flags_nested_fields_and_accepts_explicit_none():
    nested = _record({"name": "shipping", "type": {"type": "record", "name": "S", "fields": [
        {"name": "street", "type": "string"}, {"name": "country", "type": "string"}]}})
    assert [f.path for f in lint_schema(nested)] == ["shipping.street"]
    ok = _record({"name": "note_id", "type": "string", "pii": "none"})
    assert lint_schema(ok) == []


def test_lint_ignores_harmless_names():
    assert lint_schema(_record({"name": "order_id", "type": "string"}, {"name": "total_cents", "type": "long"},
                               {"name": "country", "type": "string"})) == []


@pytest.mark.parametrize("field,message", [
    ({"name": "email", "type": "string", "transform": "tokenize"}, "'transform' without 'pii'"),
    ({"name": "email", "type": "string", "pii": "email"}, "needs 'transform'"),
    ({"name": "email", "type": "string", "pii": "mail", "transform": "tokenize"}, "unknown pii kind"),
    ({"name": "email", "type": "string", "pii": "email", "transform": "encrypt"}, "unknown transform 'encrypt'"),
    ({"name": "age", "type": "int", "pii": "identifier", "transform": "tokenize"}, "needs a string field"),
    ({"name": "city", "type": "string", "pii": "address", "transform": "generalize"}, "date or timestamp"),
    ({"name": "full_name", "type": "string", "pii": "name", "transform": "mask"}, "no mask is defined"),
])
def test_invalid_annotations_name_the_field(field, message):
    with pytest.raises(PolicyError, match=message) as exc:
        rules_of(_record(field))
    assert f"'{field['name']}'" in str(exc.value)


def test_clean_types():
    rules = {r.path: r for r in rules_of(_record(
        {"name": "email", "type": ["null", "string"], "default": None, "pii": "email", "transform": "tokenize"},
        {"name": "born", "type": {"type": "int", "logicalType": "date"}, "pii": "birth_date",
         "transform": "generalize"},
        {"name": "seen", "type": {"type": "long", "logicalType": "timestamp-millis"}, "pii": "date_time",
         "transform": "generalize"},
        {"name": "items", "type": {"type": "array", "items": {"type": "record", "name": "I", "fields": [
            {"name": "label", "type": "string", "pii": "free_text", "transform": "redact"}]}}},
    ))}
    assert set(rules) == {"email", "born", "seen", "items[].label"}
    assert clean_field_type(rules["email"]) == ["null", "string"]
    assert clean_field_type(rules["born"]) == "int"
    assert clean_field_type(rules["seen"]) == {"type": "int", "logicalType": "date"}
    assert clean_field_type(rules["items[].label"]) == "string"


def test_derive_clean_fields_does_not_touch_the_source():
    src = json.loads(Path(SCHEMAS[0]).read_text())
    before = json.dumps(src, sort_keys=True)
    clean = derive_clean_fields(src)
    assert json.dumps(src, sort_keys=True) == before
    assert clean != src
