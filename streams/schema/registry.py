"""The schema registry: the ``.avsc`` files in ``schemas/``, indexed by fingerprint.

Raw schemas (``schemas/*.avsc``) describe what producers publish; clean schemas
(``schemas/clean/*.avsc``) describe what tenant consumers read, and are derived
from the raw ones (``streams.schema.clean``). Both are identified on the wire by
their CRC-64-AVRO fingerprint (Avro single-object encoding), so a consumer
needs nothing but the published files.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import expand_schema, fingerprint, to_parsing_canonical_form

from streams.schema.exceptions import SchemaFileError

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def event_type_of(record_name: str) -> str:
    """``CustomerSignup`` -> ``customer_signup``: the short name used in keys and headers."""
    return _CAMEL.sub("_", record_name).lower()


@dataclass(frozen=True)
class SchemaEntry:
    """One schema with everything the codec needs, computed once at load."""

    source: dict[str, Any] = field(repr=False)  # the file's JSON, annotations included
    parsed: Any = field(repr=False)  # fastavro's parsed form
    expanded: Any = field(repr=False)  # named-type references inlined, for the JSON walk
    fullname: str
    name: str
    event_type: str
    fingerprint: bytes  # 8 bytes, little-endian CRC-64-AVRO, as on the wire
    #: Hash of the schema file's JSON, annotations included: the schema is the policy.
    policy_version: str = ""
    path: Path | None = None
    #: fastavro's parsed form with its "already parsed" marker: fastavro re-parses a schema without the
    #: marker on every ``schemaless_writer``/``schemaless_reader`` call (~17 µs of ~35 µs per event's
    #: decode + encode), so the codec passes this one. ``parsed`` stays unmarked (canonical form, tests).
    hinted: Any = field(default=None, repr=False, compare=False)

    @property
    def fingerprint_hex(self) -> str:
        return self.fingerprint.hex()



def make_entry(source: dict[str, Any], path: Path | None = None) -> SchemaEntry:
    try:
        parsed = fastavro.parse_schema(json.loads(json.dumps(source)), _write_hint=False)
    except Exception as exc:
        where = f" in {path}" if path else ""
        raise SchemaFileError(f"invalid Avro schema{where}: {exc}") from None
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        raise SchemaFileError(f"top-level schema must be a record ({path})")
    names = [f.get("name") for f in source.get("fields", []) if isinstance(f, dict)]
    if not isinstance(source.get("fields"), list) or not names:
        raise SchemaFileError(f"record schema needs a non-empty 'fields' list ({path})")
    if len(set(names)) != len(names):
        raise SchemaFileError(f"duplicate field names in {path}")
    fullname = parsed["name"]
    name = fullname.rsplit(".", 1)[-1]
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
    expanded = expand_schema(json.loads(json.dumps(source)))
    hinted = fastavro.parse_schema(json.loads(json.dumps(source)))
    return SchemaEntry(source=source, parsed=parsed, expanded=expanded, fullname=fullname, name=name,
                       event_type=event_type_of(name), fingerprint=fp, path=path,
                       policy_version=_policy_version(source), hinted=hinted)


def _policy_version(source: dict[str, Any]) -> str:
    canon = json.dumps(source, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


class SchemaRegistry:
    """Schemas looked up by wire fingerprint or by name (full, short or event type)."""

    def __init__(self, entries: list[SchemaEntry]) -> None:
        self._by_fp: dict[bytes, SchemaEntry] = {}
        self._by_name: dict[str, SchemaEntry] = {}
        for e in entries:
            if e.fingerprint in self._by_fp:
                raise SchemaFileError(f"two schema files share fingerprint {e.fingerprint_hex}: "
                                      f"{self._by_fp[e.fingerprint].path} and {e.path}")
            self._by_fp[e.fingerprint] = e
            for alias in (e.fullname, e.name, e.event_type):
                self._by_name.setdefault(alias, e)
        self.entries = list(entries)

    @classmethod
    def load_dir(cls, directory: Path) -> "SchemaRegistry":
        files = sorted(Path(directory).glob("*.avsc"))
        if not files:
            raise SchemaFileError(f"no *.avsc files in {directory}")
        entries = []
        for f in files:
            try:
                source = json.loads(f.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise SchemaFileError(f"{f} is not valid JSON (UTF-8): {exc}") from None
            entries.append(make_entry(source, f))
        return cls(entries)

    def by_fingerprint(self, fp: bytes) -> SchemaEntry | None:
        return self._by_fp.get(fp)

    def by_name(self, name: str) -> SchemaEntry | None:
        return self._by_name.get(name)

    def __iter__(self):
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)
