"""The schema registry: every published version of every schema in ``schemas/``, indexed by fingerprint.

Raw schemas (``schemas/<event_type>/v<N>.avsc``) describe what producers publish;
clean schemas (``schemas/clean/<event_type>/v<N>.avsc``) describe what tenant
consumers read, and are derived from the raw ones, version by version
(``streams.schema.clean``). Both are identified on the wire by their
CRC-64-AVRO fingerprint (Avro single-object encoding), so a consumer needs
nothing but the published files.

Every published version is kept (``streams schemas compat`` refuses a removed or
edited one): an event written with any of them is found by its fingerprint
(``by_fingerprint``, the writer schema) and read as the event type's latest
version (``current``, the reader schema; ``streams.schema.codec`` resolves one to
the other). Names (``by_name``) and iteration give the latest versions only.
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
#: A version file's name: ``v1.avsc``, ``v2.avsc``, ... (no leading zero).
VERSION_FILE = re.compile(r"v([1-9][0-9]*)\.avsc")


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
    #: The version number (``v<N>.avsc``); an entry built without a file is version 1.
    version: int = 1

    @property
    def fingerprint_hex(self) -> str:
        return self.fingerprint.hex()



def make_entry(source: dict[str, Any], path: Path | None = None, version: int = 1) -> SchemaEntry:
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
                       policy_version=_policy_version(source), hinted=hinted, version=version)


def _policy_version(source: dict[str, Any]) -> str:
    canon = json.dumps(source, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


def version_of(path: Path) -> int:
    """The version a file's name gives (``v3.avsc`` -> 3); SchemaFileError for any other name."""
    m = VERSION_FILE.fullmatch(path.name)
    if m is None:
        raise SchemaFileError(f"{path}: a schema version file is named v<N>.avsc (v1.avsc, v2.avsc, ...)")
    return int(m.group(1))


def read_source(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SchemaFileError(f"{path} is not valid JSON (UTF-8): {exc}") from None


def version_files(directory: Path) -> list[tuple[str, int, Path]]:
    """``(event_type, version, path)`` of every ``<event_type>/v<N>.avsc`` under ``directory``, in order.

    A ``*.avsc`` directly in ``directory`` is the layout before versions: an error saying where it
    goes. Sub-directories without any ``*.avsc`` (``clean/`` under the raw schemas) are not event types.
    """
    directory = Path(directory)
    flat = sorted(directory.glob("*.avsc"))
    if flat:
        raise SchemaFileError(f"{flat[0]}: schemas are versioned; move it to "
                              f"{directory / flat[0].stem / 'v1.avsc'}")
    out = []
    for sub in sorted(p for p in directory.iterdir() if p.is_dir()):
        files = sorted(sub.glob("*.avsc"))
        out += sorted(((sub.name, version_of(f), f) for f in files), key=lambda t: t[1])
    return out


class SchemaRegistry:
    """Schemas looked up by wire fingerprint (any version) or by name (the latest version).

    ``entries`` may hold several versions of an event type (``SchemaEntry.version``); the
    highest is its ``current`` one. Two versions with the same canonical form (a change of docs
    or annotations only) share a fingerprint: it finds the later one, which reads the same bytes.
    """

    def __init__(self, entries: list[SchemaEntry]) -> None:
        self._by_fp: dict[bytes, SchemaEntry] = {}
        self._versions: dict[str, dict[int, SchemaEntry]] = {}
        for e in sorted(entries, key=lambda e: e.version):
            versions = self._versions.setdefault(e.event_type, {})
            if e.version in versions:
                raise SchemaFileError(f"two files are version {e.version} of {e.event_type}: "
                                      f"{versions[e.version].path} and {e.path}")
            versions[e.version] = e
            other = self._by_fp.get(e.fingerprint)
            if other is not None and other.event_type != e.event_type:
                raise SchemaFileError(f"two schema files share fingerprint {e.fingerprint_hex}: "
                                      f"{other.path} and {e.path}")
            self._by_fp[e.fingerprint] = e
        self._current = {t: vs[max(vs)] for t, vs in self._versions.items()}
        self._by_name: dict[str, SchemaEntry] = {}
        for e in self._current.values():
            for alias in (e.fullname, e.name, e.event_type):
                self._by_name.setdefault(alias, e)
        #: The latest version of each event type, in load order.
        self.entries = [e for e in entries if self._current[e.event_type] is e]

    @classmethod
    def load_dir(cls, directory: Path) -> "SchemaRegistry":
        """Load ``directory/<event_type>/v<N>.avsc`` (every version); SchemaFileError names a bad file."""
        files = version_files(Path(directory))
        if not files:
            raise SchemaFileError(f"no <event_type>/v<N>.avsc files in {directory}")
        entries = []
        for event_type, version, f in files:
            entry = make_entry(read_source(f), f, version)
            if entry.event_type != event_type:
                raise SchemaFileError(f"{f}: record {entry.name} is event type {entry.event_type}, "
                                      f"not {event_type} (the directory's name)")
            entries.append(entry)
        return cls(entries)

    def by_fingerprint(self, fp: bytes) -> SchemaEntry | None:
        """The version whose canonical form has this fingerprint (a writer schema), or None."""
        return self._by_fp.get(fp)

    def by_name(self, name: str) -> SchemaEntry | None:
        """The latest version of the schema with this full name, short name or event type, or None."""
        return self._by_name.get(name)

    def current(self, entry: SchemaEntry) -> SchemaEntry:
        """The latest version of ``entry``'s event type: the reader schema for data written with ``entry``."""
        return self._current.get(entry.event_type, entry)

    def versions(self, event_type: str) -> list[SchemaEntry]:
        """Every version of an event type, oldest first (empty for an unknown type)."""
        vs = self._versions.get(event_type, {})
        return [vs[v] for v in sorted(vs)]

    def all_versions(self) -> list[SchemaEntry]:
        """Every version of every event type, by event type then version."""
        return [e for t in self._versions for e in self.versions(t)]

    def __iter__(self):
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)
