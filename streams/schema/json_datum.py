"""JSON events validated against the same Avro schemas as binary ones.

Producers that cannot write Avro publish a JSON object naming its schema:

    {"schema": "customer_signup", "event_id": "...", "tenant_id": "acme", ...}

``schema`` is the record's full name, short name or event type, and the
event is validated against that type's latest version; one that fits only an
earlier kept version (a producer not upgraded yet) is validated against the
newest version it fits and resolved to the latest, as a binary event of that
version would be. Values are
plain JSON (unions are not tagged as in Avro's JSON encoding): timestamps as
epoch milliseconds or ISO-8601 with a timezone, dates as ``YYYY-MM-DD``. The
payload is UTF-8 (no BOM) and every string a valid Unicode text: a lone
surrogate (``"\\ud800"``) is a schema violation of its field.

Conversion and validation are one walk over the schema, so a violation names
the field path and what was expected there, and never the value: fastavro's
own ValidationError text contains the raw datum, which may be personal data.

Nor does it ever name a member or map key the producer chose (a JSON payload
keyed by email address or a person's name would put them in the DLQ): a path
holds schema field names only; an unknown member is reported by count and
position in its object (``unknown member #2 of CustomerSignup``), a map value
by its key's position (``attributes{#3}``), an unknown schema name not at all.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from typing import Any

from streams.schema.codec import Decoded, resolve
from streams.schema.exceptions import DecodeError, SchemaViolation, UnknownSchemaError
from streams.schema.registry import SchemaEntry, SchemaRegistry

SCHEMA_KEY = "schema"
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
MAX_DEPTH = 32
# A "\ud800" escape is valid JSON but not a Unicode character: UTF-8 cannot encode it, so a string
# holding one is a violation here, not an error later in the transform or the clean event's encoding.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _is_text(value: Any) -> bool:
    """A str that UTF-8 (hence Avro) can encode: no lone surrogate."""
    return isinstance(value, str) and (value.isascii() or _SURROGATE.search(value) is None)


def _join(path: str, name: str) -> str:
    """``name`` is always a field name from the schema, never a member name from the payload."""
    return f"{path}.{name}" if path else name


def _map_entry(path: str, position: int) -> str:
    """The path of a map's value by its key's 1-based position: the key itself is producer text."""
    return f"{path}{{#{position}}}" if path else f"{{#{position}}}"


#: Positions of unknown members listed in a violation; beyond this the count says how many more.
MAX_POSITIONS = 10


class UnknownMembers(SchemaViolation):
    """Members a record does not define, reported by count and position, never by name.

    ``positions`` are 1-based positions among the members of the JSON object as
    the producer sent it (at the top level the ``schema`` member counts too).
    """

    def __init__(self, path: str, record: str, positions: list[int], members: int) -> None:
        self.record = record
        self.positions = positions
        self.members = members
        shown = ", ".join(f"#{p}" for p in positions[:MAX_POSITIONS])
        more = f" and {len(positions) - MAX_POSITIONS} more" if len(positions) > MAX_POSITIONS else ""
        noun = "member" if len(positions) == 1 else "members"
        super().__init__(path or "<root>",
                         f"only fields of {record}: {len(positions)} unknown {noun} ({shown}{more} of {members})")


def _type_label(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return " or ".join(_type_label(s) for s in schema)
    if isinstance(schema, dict):
        if "logicalType" in schema:
            return f"{schema['type']} ({schema['logicalType']})"
        if schema.get("type") in ("record", "enum", "fixed"):
            return f"{schema['type']} {schema.get('name', '')}".strip()
        return str(schema.get("type"))
    return "?"


def to_datum(schema: Any, value: Any, path: str, depth: int = 0) -> Any:
    """Convert a JSON value to the Avro datum ``schema`` describes, or raise SchemaViolation."""
    if depth > MAX_DEPTH:
        raise SchemaViolation(path or "<root>", "less nesting")
    if isinstance(schema, list):  # union: first branch that accepts the value
        for branch in schema:
            try:
                return to_datum(branch, value, path, depth + 1)
            except SchemaViolation:
                continue
        raise SchemaViolation(path, _type_label(schema))
    if isinstance(schema, dict):
        t = schema["type"]
        logical = schema.get("logicalType")
        if logical == "timestamp-millis" and t == "long":
            return _timestamp(value, path)
        if logical == "date" and t == "int":
            return _date(value, path)
        if logical == "uuid" and t == "string":
            if not isinstance(value, str):
                raise SchemaViolation(path, "string (uuid)")
            try:
                uuid.UUID(value)
            except ValueError:
                raise SchemaViolation(path, "string (uuid)") from None
            return value
        if t == "record":
            return _record(schema, value, path, depth)
        if t == "enum":
            if not isinstance(value, str) or value not in schema["symbols"]:
                raise SchemaViolation(path, "one of " + "|".join(schema["symbols"]))
            return value
        if t == "array":
            if not isinstance(value, list):
                raise SchemaViolation(path, "array")
            return [to_datum(schema["items"], v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
        if t == "map":
            if not isinstance(value, dict):
                raise SchemaViolation(path, "map")
            for i, k in enumerate(value, 1):
                if not _is_text(k):
                    raise SchemaViolation(_map_entry(path, i), "map key (valid Unicode)")
            return {k: to_datum(schema["values"], v, _map_entry(path, i), depth + 1)
                    for i, (k, v) in enumerate(value.items(), 1)}
        if t == "fixed":
            if not isinstance(value, str) or len(value) != schema["size"]:
                raise SchemaViolation(path, f"fixed of {schema['size']} bytes")
            try:
                return value.encode("latin-1")
            except UnicodeEncodeError:
                raise SchemaViolation(path, f"fixed of {schema['size']} bytes") from None
        return to_datum(t, value, path, depth + 1)
    return _primitive(schema, value, path)


def _primitive(t: str, value: Any, path: str) -> Any:
    if t == "null":
        if value is None:
            return None
    elif t == "boolean":
        if isinstance(value, bool):
            return value
    elif t in ("int", "long"):
        lo, hi = _INT32 if t == "int" else _INT64
        if isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi:
            return value
    elif t in ("float", "double"):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif t == "string":
        if _is_text(value):
            return value
        if isinstance(value, str):
            raise SchemaViolation(path, "string (valid Unicode, no lone surrogate)")
    elif t == "bytes":
        if isinstance(value, str):
            try:
                return value.encode("latin-1")
            except UnicodeEncodeError:
                pass
    raise SchemaViolation(path, t)


def _record(schema: dict, value: Any, path: str, depth: int, ignore: str | None = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SchemaViolation(path or "<root>", _type_label(schema))
    known = {f["name"] for f in schema["fields"]}
    unknown = [i for i, k in enumerate(value, 1) if k not in known and k != ignore]
    if unknown:
        raise UnknownMembers(path, schema["name"].rsplit(".", 1)[-1], unknown, len(value))
    out: dict[str, Any] = {}
    for f in schema["fields"]:
        name = f["name"]
        fpath = _join(path, name)
        if name in value:
            out[name] = to_datum(f["type"], value[name], fpath, depth + 1)
        elif "default" in f:
            out[name] = f["default"]
        else:
            raise SchemaViolation(fpath, _type_label(f["type"]) + " (required)")
    return out


def _timestamp(value: Any, path: str) -> dt.datetime:
    label = "timestamp (epoch ms or ISO-8601 with timezone)"
    if isinstance(value, int) and not isinstance(value, bool):
        if not _INT64[0] <= value <= _INT64[1]:
            raise SchemaViolation(path, label)
        try:
            return _EPOCH + dt.timedelta(milliseconds=value)
        except OverflowError:
            raise SchemaViolation(path, label) from None
    if isinstance(value, str) and len(value) <= 40:
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise SchemaViolation(path, label) from None
        if parsed.tzinfo is None:
            raise SchemaViolation(path, label)
        try:
            # Readers decode timestamp-millis to a UTC datetime: one whose UTC time falls outside
            # years 1-9999 (an offset at either end of the range) is a violation, since no consumer
            # of the clean event could read it (and it is undecodable in Avro input anyway).
            parsed.astimezone(dt.timezone.utc)
        except OverflowError:
            raise SchemaViolation(path, label) from None
        return parsed
    raise SchemaViolation(path, label)


def _date(value: Any, path: str) -> dt.date:
    if isinstance(value, str) and _DATE_RE.fullmatch(value):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise SchemaViolation(path, "date (YYYY-MM-DD)")


def decode_json(registry: SchemaRegistry, payload: bytes) -> tuple[SchemaEntry, dict[str, Any]]:
    """Parse, identify and validate a JSON event: ``(latest version, datum)``; see ``read_json``."""
    d = read_json(registry, payload)
    return d.entry, d.datum


def read_json(registry: SchemaRegistry, payload: bytes) -> Decoded:
    """Parse, identify and validate a JSON event against the latest version of its schema, else the
    newest earlier version it fits (resolved to the latest).

    Raises DecodeError (not JSON, not an object, too deep), UnknownSchemaError
    (missing or unknown ``schema``) or SchemaViolation (the latest version's, when no version fits).
    """
    try:
        # Strictly UTF-8 (RFC 8259): json.loads(bytes) also guesses UTF-16/32 and decodes with
        # 'surrogatepass', which would let invalid UTF-8 (encoded surrogates) through as lone surrogates.
        obj = json.loads(payload.decode("utf-8"))
    except RecursionError:
        raise DecodeError("JSON nested too deeply") from None
    except (UnicodeDecodeError, ValueError):
        raise DecodeError("not valid UTF-8 JSON") from None
    if not isinstance(obj, dict):
        raise DecodeError("JSON event must be an object")
    name = obj.get(SCHEMA_KEY)
    if not isinstance(name, str) or not name:
        raise UnknownSchemaError("JSON event has no 'schema' member naming its schema")
    entry = registry.by_name(name)
    if entry is None:  # the name is producer text: not repeated
        raise UnknownSchemaError("the 'schema' member names no schema in schemas/")
    # The 'schema' member stays in place (and is skipped) so unknown members' positions are as sent.
    try:
        return Decoded(entry, entry, _record(entry.expanded, obj, "", 0, ignore=SCHEMA_KEY))
    except SchemaViolation as latest_violation:
        for writer in reversed(registry.versions(entry.event_type)[:-1]):
            try:
                datum = _record(writer.expanded, obj, "", 0, ignore=SCHEMA_KEY)
            except SchemaViolation:
                continue
            return Decoded(writer, entry, resolve(writer, entry, datum))
        raise latest_violation from None
