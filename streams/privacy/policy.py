"""The privacy policy is the schema: field annotations say what each field is and what happens to it.

A field annotated ``"pii": "<kind>"`` holds personal data of that kind and
``"transform": "<transform>"`` says how the pipeline treats it:

| transform    | clean value                                                   | reversible |
|--------------|---------------------------------------------------------------|------------|
| `tokenize`   | `tok.<kind>.<...>`: deterministic per subject (AES-SIV)       | only via detokenize, until erasure |
| `hash`       | `hash.<kind>.<32 hex>`: keyed HMAC-SHA256 per subject         | never |
| `mask`       | a documented part kept (`MASKS`), the rest `*`                | never |
| `redact`     | empty string, or null where the type allows null              | never |
| `generalize` | birth date -> year (int); timestamp -> day (date)             | never |

``"pii": "none"`` marks a field that looks like personal data by its name but
is not (the lint accepts it). This module parses annotations into a
``Policy`` and derives each field's clean Avro type; applying it to data is
``streams.privacy.transforms``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

from streams.privacy.exceptions import PolicyError

TRANSFORMS = ("tokenize", "hash", "mask", "redact", "generalize")
PII_KINDS = ("name", "email", "phone", "address", "postal_code", "birth_date", "free_text", "ip_address",
             "identifier", "date_time")
NOT_PII = "none"

# What `mask` keeps, per kind (documented in README and in the clean schema's field doc).
MASKS = {
    "email": "the domain: ***@example.com",
    "phone": "the last 2 digits: ***47",
    "postal_code": "the first 2 characters: 10***",
    "ip_address": "the first two octets: 192.168.*.*",
}


@dataclass(frozen=True)
class FieldRule:
    path: str  # dotted, arrays as [] (e.g. shipping_address.street, items[].sku)
    kind: str
    transform: str
    nullable: bool
    base_type: Any  # the non-null branch of the field's type


def _split_nullable(t: Any) -> tuple[bool, Any]:
    if isinstance(t, list):
        non_null = [b for b in t if b != "null"]
        if len(non_null) != 1:
            return ("null" in t), t
        return ("null" in t), non_null[0]
    return False, t


def _logical(t: Any) -> str | None:
    return t.get("logicalType") if isinstance(t, dict) else None


def _primitive(t: Any) -> Any:
    return t.get("type") if isinstance(t, dict) else t


def _check(rule: FieldRule) -> None:
    t, logical = _primitive(rule.base_type), _logical(rule.base_type)
    if rule.transform == "generalize":
        if logical not in ("date", "timestamp-millis"):
            raise PolicyError(f"field '{rule.path}': generalize needs a date or timestamp-millis field")
    elif t != "string":
        raise PolicyError(f"field '{rule.path}': {rule.transform} needs a string field")
    if rule.transform == "mask" and rule.kind not in MASKS:
        raise PolicyError(f"field '{rule.path}': no mask is defined for kind '{rule.kind}' "
                          f"(masks exist for: {', '.join(sorted(MASKS))})")


def walk_fields(record: dict[str, Any], visit: Callable[[dict[str, Any], str], bool], prefix: str = "") -> None:
    """Call ``visit(field, path)`` for every field, depth first; descend into a field's records,
    arrays (path ``name[]``) and maps (``name{}``) when it returns True."""

    def walk_type(t: Any, path: str) -> None:
        for branch in (t if isinstance(t, list) else [t]):
            if isinstance(branch, dict):
                if branch.get("type") == "record":
                    walk_fields(branch, visit, path)
                elif branch.get("type") == "array":
                    walk_type(branch["items"], path + "[]")
                elif branch.get("type") == "map":
                    walk_type(branch["values"], path + "{}")

    for f in record.get("fields", []):
        path = f"{prefix}.{f['name']}" if prefix else f["name"]
        if visit(f, path):
            walk_type(f["type"], path)


def rules_of(schema_source: dict[str, Any]) -> list[FieldRule]:
    """Every annotated field of a raw schema, validated. Raises PolicyError naming the field."""
    rules: list[FieldRule] = []

    def visit(f: dict[str, Any], path: str) -> bool:
        kind, transform = f.get("pii"), f.get("transform")
        if kind is None and transform is not None:
            raise PolicyError(f"field '{path}': 'transform' without 'pii'")
        if kind is None or kind == NOT_PII:
            return True  # look inside (a record may hold annotated fields)
        if kind not in PII_KINDS:
            raise PolicyError(f"field '{path}': unknown pii kind '{kind}' (known: {', '.join(PII_KINDS)})")
        if transform not in TRANSFORMS:
            raise PolicyError(f"field '{path}': pii field needs 'transform', one of {', '.join(TRANSFORMS)}")
        nullable, base = _split_nullable(f["type"])
        rule = FieldRule(path, kind, transform, nullable, base)
        _check(rule)
        rules.append(rule)
        return False

    walk_fields(schema_source, visit)
    return rules


def clean_field_type(rule: FieldRule) -> Any:
    """The Avro type of a transformed field in the clean schema."""
    if rule.transform == "generalize":
        base: Any = "int" if _logical(rule.base_type) == "date" else {"type": "int", "logicalType": "date"}
    else:
        base = "string"
    return ["null", base] if rule.nullable else base


def clean_field_doc(rule: FieldRule) -> str:
    what = {
        "tokenize": "token (tok.<kind>.*), deterministic per subject; reversible only via audited detokenize "
                    "until the subject is erased",
        "hash": "keyed one-way hash per subject (hash.<kind>.*)",
        "mask": f"masked, keeping {MASKS.get(rule.kind, '')}",
        "redact": "redacted (empty)",
        "generalize": "generalized: year only" if _logical(rule.base_type) == "date" else "generalized: day only",
    }[rule.transform]
    return f"PII ({rule.kind}) {what}."


def derive_clean_fields(schema_source: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``schema_source`` whose annotated fields have their clean types and docs."""
    rules = {r.path: r for r in rules_of(schema_source)}
    src = copy.deepcopy(schema_source)

    def visit(f: dict[str, Any], path: str) -> bool:
        rule = rules.get(path)
        if rule is None:
            return True
        f["type"] = clean_field_type(rule)
        f["doc"] = clean_field_doc(rule)
        if "default" in f:
            if rule.nullable:
                f["default"] = None
            else:
                del f["default"]
        return False

    walk_fields(src, visit)
    return src
