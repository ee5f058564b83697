"""Avro single-object encoding: ``C3 01`` + 8-byte CRC-64-AVRO fingerprint + Avro body.

This is the Avro specification's own framing, so any Avro library can read
what the pipeline writes with nothing but the ``.avsc`` files. The fingerprint
names the writer's version; ``decode`` reads the body with it and resolves the
datum to the event type's latest version (Avro schema resolution: fields added
with a default filled in, removed ones dropped), so an event written before a
compatible schema change reads as one written after it.
"""

from __future__ import annotations

import io
from typing import Any, NamedTuple

from fastavro import schemaless_reader, schemaless_writer

from streams.schema.exceptions import DecodeError, UnknownSchemaError
from streams.schema.registry import SchemaEntry, SchemaRegistry

MAGIC = b"\xc3\x01"
HEADER_LEN = 10


def is_single_object(payload: bytes) -> bool:
    return payload[:2] == MAGIC


def _schema(entry: SchemaEntry) -> Any:
    """The schema fastavro does not parse again (an entry built by hand may lack it)."""
    return entry.hinted if entry.hinted is not None else entry.parsed


def encode(entry: SchemaEntry, datum: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    buf.write(MAGIC)
    buf.write(entry.fingerprint)
    schemaless_writer(buf, _schema(entry), datum)
    return buf.getvalue()


class Decoded(NamedTuple):
    writer: SchemaEntry  # the version the payload was written with (its fingerprint)
    entry: SchemaEntry  # the latest version of its event type, which ``datum`` follows
    datum: dict[str, Any]


def decode(registry: SchemaRegistry, payload: bytes) -> tuple[SchemaEntry, dict[str, Any]]:
    """Decode a single-object payload: ``(latest version, datum resolved to it)``; see ``read``."""
    d = read(registry, payload)
    return d.entry, d.datum


def read(registry: SchemaRegistry, payload: bytes) -> Decoded:
    """Decode a single-object payload written with any version in ``registry``.

    Raises UnknownSchemaError for a fingerprint not in ``registry`` and
    DecodeError for a body that is truncated, corrupt or followed by
    trailing bytes. The caller caps the payload size first, which bounds the
    work: fastavro reads strings and arrays from an in-memory buffer, so a
    huge declared length fails at the buffer's end instead of allocating.
    """
    if len(payload) < HEADER_LEN or not is_single_object(payload):
        raise DecodeError("not an Avro single-object payload")
    fp = bytes(payload[2:HEADER_LEN])
    writer = registry.by_fingerprint(fp)
    if writer is None:
        raise UnknownSchemaError("the writer schema fingerprint is not in schemas/")  # 8 producer bytes: not echoed
    entry = registry.current(writer)
    buf = io.BytesIO(payload)
    buf.seek(HEADER_LEN)
    try:
        datum = schemaless_reader(buf, _schema(writer), None if entry is writer else _schema(entry))
    except EOFError:
        raise DecodeError("Avro body is truncated") from None
    except Exception as exc:  # fastavro raises many types on corrupt input; none may leak values
        raise DecodeError(f"Avro body is corrupt ({type(exc).__name__})") from None
    if buf.tell() != len(payload):
        raise DecodeError(f"{len(payload) - buf.tell()} trailing bytes after the Avro body")
    if not isinstance(datum, dict):
        raise DecodeError("Avro body is not a record")
    return Decoded(writer, entry, datum)


def resolve(writer: SchemaEntry, entry: SchemaEntry, datum: dict[str, Any]) -> dict[str, Any]:
    """``datum`` of version ``writer`` as ``entry`` reads it (a JSON event of an older version)."""
    if entry is writer:
        return datum
    buf = io.BytesIO()
    schemaless_writer(buf, _schema(writer), datum)
    buf.seek(0)
    return schemaless_reader(buf, _schema(writer), _schema(entry))
