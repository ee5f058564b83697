"""Decodes clean tenant-stream records with nothing but the published ``schemas/clean/*.avsc``.

What a tenant consumer does, packaged for the CLI. A consumer outside the
project needs only fastavro and the files (README, "Reading a tenant stream").
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
        """Return (schema full name, event). Raises DecodeError / UnknownSchemaError."""
        entry, datum = codec.decode(self.registry, value)
        return entry.fullname, datum
