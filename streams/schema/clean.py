"""The clean schema of each raw schema: what tenant consumers decode.

The clean schema is derived, never hand-written: the raw record's fields plus
a ``lineage`` record that makes every clean event traceable to its source
(DESIGN decision 9). Each raw version has its clean version of the same number:
``schemas/clean/<event_type>/v<N>.avsc`` is derived from
``schemas/<event_type>/v<N>.avsc`` (``streams schemas derive``), and a test keeps
them in sync with this code. The pipeline writes the latest clean version;
consumers decode every kept one.
Annotated fields get the clean type and doc their transform gives them (a
token is a string, a generalized birth date an int year, ...): each
transform's ``clean_type``/``field_doc`` in ``streams.privacy.transforms``,
asked via ``streams.privacy.policy``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from streams.privacy.policy import derive_clean_fields
from streams.schema.registry import SchemaEntry, SchemaRegistry, make_entry

LINEAGE_FIELD = "lineage"

_LINEAGE = {
    "name": LINEAGE_FIELD,
    "doc": "Where this clean event came from.",
    "type": {
        "type": "record",
        "name": "Lineage",
        "fields": [
            {"name": "source_topic", "type": "string"},
            {"name": "source_partition", "type": "int"},
            {"name": "source_offset", "type": "long"},
            {"name": "raw_schema_fingerprint", "type": "string", "doc": "CRC-64-AVRO, hex, little-endian as on the wire."},
            {"name": "policy_version", "type": "string", "doc": "Version of the privacy policy (the annotated raw schema) applied."},
            {"name": "processed_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        ],
    },
}


def derive_clean_source(raw: SchemaEntry) -> dict[str, Any]:
    src = derive_clean_fields(raw.source)
    ns = src.get("namespace") or raw.fullname.rpartition(".")[0]
    src["namespace"] = f"{ns}.clean" if ns else "clean"
    src["name"] = raw.name
    src["doc"] = f"Clean {raw.name}, derived from {raw.fullname} by the pipeline. " + (raw.source.get("doc") or "")
    src["fields"] = [f for f in src["fields"] if f["name"] != LINEAGE_FIELD] + [copy.deepcopy(_LINEAGE)]
    return src


def derive_clean(raw: SchemaEntry) -> SchemaEntry:
    return make_entry(derive_clean_source(raw))


def render(source: dict[str, Any]) -> str:
    return json.dumps(source, indent=2) + "\n"


def clean_path(clean_dir: Path, raw: SchemaEntry) -> Path:
    """Where the clean version of ``raw`` is published: ``<clean_dir>/<event_type>/v<N>.avsc``."""
    return clean_dir / raw.event_type / f"v{raw.version}.avsc"


def write_clean_dir(raw_registry: SchemaRegistry, out_dir: Path) -> list[Path]:
    """Write the clean version of every raw version; return the paths written."""
    written = []
    for raw in raw_registry.all_versions():
        path = clean_path(out_dir, raw)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(derive_clean_source(raw)))
        written.append(path)
    return written


def stale_clean(raw_registry: SchemaRegistry, clean_dir: Path) -> list[str]:
    """``<event_type> v<N>`` of each raw version whose published clean file is missing or differs."""
    return [f"{raw.event_type} v{raw.version}" for raw in raw_registry.all_versions()
            if not clean_path(clean_dir, raw).exists()
            or clean_path(clean_dir, raw).read_text() != render(derive_clean_source(raw))]
