"""Whether a new schema version treats a field's personal data less strictly than the version before.

Each field's treatment has a strength, the transform's ``strength`` (``streams.privacy.transforms``):

====  =====================  ==================================================================
4     ``redact``             nothing of the value is kept
3     ``hash``               nothing in the clear, never reversible; linkable per subject until erasure
2     ``tokenize``           nothing in the clear, but reversible (audited detokenize) until erasure
1     ``mask``, ``generalize`` a documented part or a coarser form of the value in the clear
0     none                   the value in the clear: no annotation, ``"pii": "none"``, or a transform
                             that does not declare its strength
====  =====================  ==================================================================

A field whose treatment in the new version is weaker (lower) than in the one before is refused
unless the new version records a waiver for it, a top-level attribute of the schema:

    "privacy_waivers": [{"field": "email", "date": "2026-12-02", "reason": "why, and who agreed"}]

``field`` is the field's dotted path (``shipping_address.city``), ``date`` an ISO date
(``YYYY-MM-DD``) and ``reason`` a non-empty text. A waiver covers its field in that version
only; one for a field that is not weakened is ignored (a later version may keep the attribute).
Moving a field between transforms of the same strength, removing it, or adding a new one is not
a weakening (a new unannotated field that looks like personal data is the lint's business).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from streams.privacy.policy import NOT_PII, walk_fields
from streams.privacy.transforms import REGISTRY

WAIVERS = "privacy_waivers"
NONE = "none"  # the treatment of a field without a transform


def treatments(source: dict[str, Any]) -> dict[str, str]:
    """Every field's path -> its transform's name, or ``none`` (nested fields included)."""
    out: dict[str, str] = {}

    def visit(f: dict[str, Any], path: str) -> bool:
        annotated = f.get("pii") not in (None, NOT_PII) and f.get("transform") is not None
        out[path] = f["transform"] if annotated else NONE
        return not annotated

    walk_fields(source, visit)
    return out


def strength(treatment: str) -> int:
    transform = REGISTRY.get(treatment)
    return getattr(transform, "strength", 0) if transform is not None else 0


def waivers(source: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The schema's waivers by field path, and the problems of the malformed ones (each naming what is wrong)."""
    raw = source.get(WAIVERS, [])
    if not isinstance(raw, list):
        return {}, [f"'{WAIVERS}' must be a list of {{field, date, reason}} objects"]
    found: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for i, w in enumerate(raw):
        where = f"'{WAIVERS}' #{i + 1}"
        if not isinstance(w, dict) or not isinstance(w.get("field"), str) or not w["field"]:
            problems.append(f"{where}: needs a 'field' (the field's dotted path)")
            continue
        where = f"{where} (field '{w['field']}')"
        date = w.get("date")
        try:
            if not isinstance(date, str) or len(date) != 10:
                raise ValueError
            dt.date.fromisoformat(date)
        except ValueError:
            problems.append(f"{where}: 'date' must be YYYY-MM-DD")
            continue
        if not isinstance(w.get("reason"), str) or not w["reason"].strip():
            problems.append(f"{where}: needs a non-empty 'reason'")
            continue
        found[w["field"]] = w
    return found, problems


def weakened(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """``(field path, what changed, waived)`` of each field ``new`` treats weaker than ``old``."""
    before, after = treatments(old), treatments(new)
    waived, _ = waivers(new)
    out = []
    for path, was in before.items():
        now = after.get(path)
        if now is None or strength(now) >= strength(was):
            continue
        change = f"privacy treatment weakened from {was} ({strength(was)}) to {now} ({strength(now)})"
        out.append((path, change, path in waived))
    return out
