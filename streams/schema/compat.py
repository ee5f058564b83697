"""Schema evolution rules: what ``streams schemas compat`` checks between the schemas of a git ref and now.

Pure logic over the schema files' JSON (``Versions``: event type -> version -> source); reading
them from the working tree and from git is ``streams.schema.history``. The rules:

1. A published version is never removed nor edited in place (raw or clean): readers may still meet
   events written with it, and its fingerprint is on the wire. Versions are numbered v1..vN.
2. Every raw version has its clean version, derived from it (``streams schemas derive``).
3. A new raw version is BACKWARD compatible with every earlier one (transitively): the new reader
   reads what any earlier writer wrote (in-flight events on ``events.raw``).
4. A new clean version is FULL compatible with every earlier clean version (transitively): tenant
   consumers upgrade at their own pace, so new readers read old events and old readers new ones.
5. A new raw version treats no field's personal data weaker than the version before, unless it
   records a dated waiver for that field (``streams.privacy.weakening``).

The Avro rules (3, 4) are Apache Avro's own ``ReaderWriterCompatibilityChecker``; 1, 2 and 5 are
this project's. Each ``Problem`` names the schema, the version and, where there is one, the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import avro.schema
from avro.compatibility import (ReaderWriterCompatibilityChecker, SchemaCompatibilityResult,
                                SchemaCompatibilityType, lookup_writer_field)

from streams.privacy.weakening import waivers, weakened
from streams.schema.clean import derive_clean_source
from streams.schema.registry import make_entry

#: event type -> version -> the schema file's JSON
Versions = dict[str, dict[int, dict[str, Any]]]

CLEAN = "clean/"  # the prefix of a clean schema's name in a Problem


@dataclass(frozen=True)
class Problem:
    schema: str  # the event type, "clean/<event type>" for a clean schema
    version: int
    field: str | None  # the field's dotted path, None for the whole schema
    message: str

    def __str__(self) -> str:
        where = f"{self.schema} v{self.version}" + (f" field '{self.field}'" if self.field else "")
        return f"{where}: {self.message}"


# ------------------------------------------------------------------ Avro rules (Apache Avro's checker)


def _parse(source: dict[str, Any]) -> avro.schema.Schema:
    return avro.schema.parse(json.dumps(source))


def _describe(result: SchemaCompatibilityResult) -> str:
    kinds = sorted({i.value for i in result.incompatibilities})
    return f"{', '.join(kinds)} ({'; '.join(sorted(result.messages))})"


def _nested_path(schema: avro.schema.Schema, location: str, path: str) -> str:
    """The field path a checker location (``/fields/2/type/items/fields/0``) points at, below ``path``."""
    tokens = [t for t in location.split("/") if t]
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == "fields" and i + 1 < len(tokens) and isinstance(schema, avro.schema.RecordSchema):
            f = schema.fields[int(tokens[i + 1])]
            path, schema, i = f"{path}.{f.name}", f.type, i + 2
            continue
        if tok == "items" and isinstance(schema, avro.schema.ArraySchema):
            path, schema = path + "[]", schema.items
        elif tok == "values" and isinstance(schema, avro.schema.MapSchema):
            path, schema = path + "{}", schema.values
        elif tok.isdigit() and isinstance(schema, avro.schema.UnionSchema) and int(tok) < len(schema.schemas):
            schema = schema.schemas[int(tok)]
        elif tok != "type":
            break
        i += 1
    return path


def avro_problems(reader: dict[str, Any], writer: dict[str, Any]) -> list[tuple[str | None, str]]:
    """``(field path or None, what is wrong)`` for each reason ``reader`` cannot read data ``writer`` wrote."""
    r, w = _parse(reader), _parse(writer)
    checker = ReaderWriterCompatibilityChecker()
    if checker.get_compatibility(r, w).compatibility is SchemaCompatibilityType.compatible:
        return []
    assert isinstance(r, avro.schema.RecordSchema) and isinstance(w, avro.schema.RecordSchema)
    out: list[tuple[str | None, str]] = []
    if r.fullname != w.fullname and w.fullname not in (r.props.get("aliases") or []):
        out.append((None, f"name_mismatch (record {r.fullname}, was {w.fullname})"))
    # Field by field, so each problem names its field (the checker reports positions).
    for rf in r.fields:
        wf = lookup_writer_field(writer_schema=w, reader_field=rf)
        if wf is None:
            if not rf.has_default:
                out.append((rf.name, "reader_field_missing_default_value (a field without a default that "
                                     "the other version does not write)"))
            continue
        result = ReaderWriterCompatibilityChecker().get_compatibility(rf.type, wf.type)
        if result.compatibility is SchemaCompatibilityType.compatible:
            continue
        paths = sorted({_nested_path(rf.type, loc, rf.name) for loc in result.locations})
        out.append((max(paths, key=len), _describe(result)))
    return out


# ------------------------------------------------------------------ the rules over versions


def _kept(name: str, base: Versions, current: Versions) -> list[Problem]:
    """Rule 1: nothing published removed or edited; versions numbered v1..vN."""
    out = []
    for t, versions in sorted(base.items()):
        for v, source in sorted(versions.items()):
            now = current.get(t, {}).get(v)
            if now is None:
                out.append(Problem(name + t, v, None, "published version removed: versions are kept, readers may "
                                                       "still meet events written with it"))
            elif now != source:
                out.append(Problem(name + t, v, None, f"published version edited in place: add "
                                                       f"v{max(current[t]) + 1} instead"))
    for t, versions in sorted(current.items()):
        missing = sorted(set(range(1, max(versions) + 1)) - set(versions) - set(base.get(t, {})))
        out += [Problem(name + t, v, None, "version missing: versions are numbered v1..vN") for v in missing]
    return out


def _derived(raw: Versions, clean: Versions) -> list[Problem]:
    """Rule 2: each raw version's clean version is there and is what the code derives."""
    out = []
    for t, versions in sorted(raw.items()):
        for v, source in sorted(versions.items()):
            published = clean.get(t, {}).get(v)
            if published is None:
                out.append(Problem(CLEAN + t, v, None, "missing: run `streams schemas derive`"))
            elif published != derive_clean_source(make_entry(source)):
                out.append(Problem(CLEAN + t, v, None, f"differs from the one derived from {t} v{v}: "
                                                       "run `streams schemas derive`"))
    for t, versions in sorted(clean.items()):
        out += [Problem(CLEAN + t, v, None, f"has no raw version {t} v{v}")
                for v in sorted(versions) if v not in raw.get(t, {})]
    return out


def _new(base: Versions, current: Versions) -> list[tuple[str, int]]:
    return [(t, v) for t, versions in sorted(current.items()) for v in sorted(versions) if v not in base.get(t, {})]


def _backward(raw: Versions, t: str, v: int) -> list[Problem]:
    """Rule 3: the new raw version reads what every earlier one wrote."""
    new = raw[t][v]
    return [Problem(t, v, field, f"cannot read events written with v{k}: {what}")
            for k in sorted(raw[t]) if k < v for field, what in avro_problems(new, raw[t][k])]


def _full(clean: Versions, t: str, v: int) -> list[Problem]:
    """Rule 4: the new clean version and every earlier one read each other's events."""
    new, out = clean[t][v], []
    for k in sorted(clean[t]):
        if k >= v:
            continue
        old = clean[t][k]
        out += [Problem(CLEAN + t, v, field, f"not backward compatible with clean v{k} (a v{v} reader cannot "
                                             f"read v{k} events): {what}") for field, what in avro_problems(new, old)]
        out += [Problem(CLEAN + t, v, field, f"not forward compatible with clean v{k} (a v{k} reader cannot "
                                             f"read v{v} events): {what}") for field, what in avro_problems(old, new)]
    return out


def _privacy(raw: Versions, t: str, v: int) -> list[Problem]:
    """Rule 5: no field treated weaker than in the version before, unless waived."""
    out = [Problem(t, v, None, p) for p in waivers(raw[t][v])[1]]
    before = raw[t].get(v - 1)
    if before is None:
        return out
    return out + [Problem(t, v, field, f"{change} without a waiver (see README, 'Schema changes step by step')")
                  for field, change, waived in weakened(before, raw[t][v]) if not waived]


def check(base_raw: Versions, base_clean: Versions, raw: Versions, clean: Versions) -> list[Problem]:
    """Every problem of the schemas now (``raw``, ``clean``) against those of the ref (``base_*``)."""
    problems = _kept("", base_raw, raw) + _kept(CLEAN, base_clean, clean) + _derived(raw, clean)
    for t, v in _new(base_raw, raw):
        problems += _backward(raw, t, v) + _privacy(raw, t, v)
    for t, v in _new(base_clean, clean):
        problems += _full(clean, t, v)
    return problems
