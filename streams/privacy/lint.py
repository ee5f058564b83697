"""The PII lint: a field whose name looks like personal data must carry a ``pii`` annotation.

Nobody ships PII by forgetting an annotation: ``streams schemas lint`` and a
test run this over ``schemas/``. A field that only looks like PII is marked
``"pii": "none"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from streams.privacy.exceptions import PolicyError
from streams.privacy.policy import rules_of, walk_fields

# Name fragments of personal data (matched on snake_case / camelCase words).
PII_NAME_PATTERNS = {
    "name": r"(^|_)(full_?name|first_?name|last_?name|given_?name|family_?name|surname|name|recipient|contact_?name)($|_)",
    "email": r"(^|_)(e_?mail|mail|reply_to)($|_)",
    "phone": r"(^|_)(phone|mobile|tel|telephone|msisdn|fax)($|_)",
    "address": r"(^|_)(address|street|city|town|postal_?code|post_?code|zip(_?code)?|house|apartment)($|_)",
    "birth_date": r"(^|_)(birth|dob|birthday|birth_?date|date_of_birth)($|_)",
    "free_text": r"(^|_)(body|message|text|comment|comments|note|notes|description|free_?text|remarks)($|_)",
    "ip_address": r"(^|_)(ip|ip_?address|ipv4|ipv6)($|_)",
    "identifier": r"(^|_)(ssn|passport|national_?id|tax_?id|iban|card_?number|license)($|_)",
}
_COMPILED = {k: re.compile(v) for k, v in PII_NAME_PATTERNS.items()}
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


@dataclass(frozen=True)
class LintFinding:
    schema: str
    path: str
    looks_like: str

    def __str__(self) -> str:
        return (f"{self.schema}: field '{self.path}' looks like {self.looks_like} but has no 'pii' annotation "
                f"(add \"pii\": \"<kind>\", \"transform\": \"...\", or \"pii\": \"none\")")


def _looks_like(name: str) -> str | None:
    snake = _CAMEL.sub("_", name).lower()
    for kind, pattern in _COMPILED.items():
        if pattern.search(snake):
            return kind
    return None


def _is_container(t: Any) -> bool:
    branches = t if isinstance(t, list) else [t]
    return any(isinstance(b, dict) and b.get("type") in ("record", "array", "map") for b in branches)


def lint_schema(source: dict[str, Any], schema_name: str | None = None) -> list[LintFinding]:
    """Findings for one raw schema; annotation errors (PolicyError) are raised as they are."""
    schema_name = schema_name or source.get("name", "?")
    rules_of(source)  # an invalid annotation is an error of its own
    findings: list[LintFinding] = []

    def visit(f: dict[str, Any], path: str) -> bool:
        if "pii" in f:
            return False  # annotated (or explicitly "none"): judged by the policy
        kind = _looks_like(f["name"])
        # A record-typed field (an address record, say) is judged by its own fields.
        if kind and not _is_container(f["type"]) and f["name"] not in ("tenant_id", "subject_id", "event_id"):
            findings.append(LintFinding(schema_name, path, kind))
        return True

    walk_fields(source, visit)
    return findings


__all__ = ["LintFinding", "PolicyError", "lint_schema", "PII_NAME_PATTERNS"]
