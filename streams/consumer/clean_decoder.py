"""Decodes clean tenant-stream records with nothing but the published ``schemas/clean/<type>/v<N>.avsc``.

What a tenant consumer does, packaged for the CLI. A consumer outside the
project needs only fastavro and the files (README, "Reading a tenant stream").
A record written with any kept clean version decodes, as the latest version
of its type (Avro schema resolution; clean versions are fully compatible, which
``streams schemas compat`` checks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streams.schema import codec
from streams.schema.registry import SchemaRegistry


class CleanDecoder:
    def __init__(self, registry: SchemaRegistry) -> None:
        self.registry = registry

    @classmethod
    def from_dir(cls, clean_dir: Path) -> "CleanDecoder":
        return cls(SchemaRegistry.load_dir(clean_dir))

    def decode(self, value: bytes) -> tuple[str, dict[str, Any]]:
        """Return (schema full name, event as its type's latest clean version). Raises DecodeError /
        UnknownSchemaError (a version newer than the files: update them)."""
        entry, datum = codec.decode(self.registry, value)
        return entry.fullname, datum
