"""The privacy policy is the schema: field annotations say what each field is and what happens to it.

A field annotated ``"pii": "<kind>"`` holds personal data of that kind and
``"transform": "<transform>"`` names how the pipeline treats it: one of the
transforms registered in ``streams.privacy.transforms`` (``REGISTRY``; each one's
``doc`` says what its clean value is). ``"pii": "none"`` marks a field that
looks like personal data by its name but is not (the lint accepts it).

This module parses annotations into ``FieldRule``s, asks each rule's transform
whether it fits the field (so a bad policy fails at load, naming the field),
and derives each field's clean Avro type and doc from the transform; applying
the policy to data is ``streams.privacy.transforms.PolicyApplier``.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

from streams.privacy.exceptions import PolicyError
from streams.privacy.transforms import REGISTRY, FieldRule, lookup

__all__ = ["FieldRule", "NOT_PII", "PII_KINDS", "clean_field_doc", "clean_field_type", "derive_clean_fields",
           "rules_of", "walk_fields"]

PII_KINDS = ("name", "email", "phone", "address", "postal_code", "birth_date", "free_text", "ip_address",
             "identifier", "date_time")
NOT_PII = "none"


def _split_nullable(t: Any) -> tuple[bool, Any]:
    if isinstance(t, list):
        non_null = [b for b in t if b != "null"]
        if len(non_null) != 1:
            return ("null" in t), t
        return ("null" in t), non_null[0]
    return False, t


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
        if transform is None:
            raise PolicyError(f"field '{path}': pii field needs 'transform', one of {', '.join(REGISTRY)}")
        try:
            checker = lookup(transform)
        except PolicyError as exc:  # never a fall-through to some default transform
            raise PolicyError(f"field '{path}': {exc}") from None
        nullable, base = _split_nullable(f["type"])
        rule = FieldRule(path, kind, transform, nullable, base)
        problems = checker.check(rule)
        if problems:
            raise PolicyError(f"field '{path}': " + "; ".join(problems))
        rules.append(rule)
        return False

    walk_fields(schema_source, visit)
    return rules


def clean_field_type(rule: FieldRule) -> Any:
    """The Avro type of a transformed field in the clean schema (null stays allowed where it was)."""
    base = lookup(rule.transform).clean_type(rule.base_type)
    return ["null", base] if rule.nullable else base


def clean_field_doc(rule: FieldRule) -> str:
    """The clean field's doc: what the field held, and what its transform made of it."""
    return f"PII ({rule.kind}) {lookup(rule.transform).field_doc(rule)}."


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
