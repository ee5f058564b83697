"""The published clean schemas (schemas/clean/) are exactly what the code derives from the raw ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.schema.clean import LINEAGE_FIELD, derive_clean, derive_clean_source, render, write_clean_dir
from streams.schema.registry import SchemaRegistry

REPO = Path(__file__).resolve().parents[2]
RAW_DIR = REPO / "schemas"
CLEAN_DIR = RAW_DIR / "clean"
LINEAGE_FIELDS = ["source_topic", "source_partition", "source_offset", "raw_schema_fingerprint", "policy_version",
                  "processed_at"]

RAW = SchemaRegistry.load_dir(RAW_DIR)


@pytest.fixture(scope="module")
def clean_registry() -> SchemaRegistry:
    return SchemaRegistry.load_dir(CLEAN_DIR)


def test_one_clean_file_per_raw_schema():
    assert sorted(p.name for p in CLEAN_DIR.glob("*.avsc")) == sorted(f"{e.event_type}.avsc" for e in RAW)


@pytest.mark.parametrize("raw", list(RAW), ids=lambda e: e.event_type)
def test_published_file_in_sync(raw):
    published = (CLEAN_DIR / f"{raw.event_type}.avsc").read_text()
    assert published == render(derive_clean_source(raw)), (
        f"schemas/clean/{raw.event_type}.avsc is stale: run `streams schemas derive`")


@pytest.mark.parametrize("raw", list(RAW), ids=lambda e: e.event_type)
def test_clean_schema_shape(raw, clean_registry):
    clean = clean_registry.by_name(raw.name)
    assert clean is not None
    assert clean.fullname == raw.fullname.rpartition(".")[0] + ".clean." + raw.name
    assert clean.event_type == raw.event_type
    assert clean.fingerprint != raw.fingerprint
    assert clean.fingerprint == derive_clean(raw).fingerprint
    names = [f["name"] for f in clean.source["fields"]]
    assert names == [f["name"] for f in raw.source["fields"]] + [LINEAGE_FIELD]
    lineage = clean.source["fields"][-1]
    assert lineage["type"]["type"] == "record"
    assert [f["name"] for f in lineage["type"]["fields"]] == LINEAGE_FIELDS
    assert raw.fullname in clean.source["doc"]


def test_clean_fingerprints_do_not_collide_with_raw(clean_registry):
    assert not {e.fingerprint for e in RAW} & {e.fingerprint for e in clean_registry}


def test_derivation_is_idempotent_and_does_not_mutate_raw():
    raw = RAW.by_name("order_placed")
    before = json.dumps(raw.source, sort_keys=True)
    src = derive_clean_source(raw)
    assert json.dumps(raw.source, sort_keys=True) == before
    # A raw schema that (wrongly) already has a lineage field gets exactly one.
    again = derive_clean_source(derive_clean(raw))
    assert [f["name"] for f in again["fields"]].count(LINEAGE_FIELD) == 1
    assert src["fields"][-1] == again["fields"][-1]


def test_write_clean_dir_reproduces_published_files(tmp_path):
    written = write_clean_dir(RAW, tmp_path / "out")
    assert sorted(p.name for p in written) == sorted(p.name for p in CLEAN_DIR.glob("*.avsc"))
    for p in written:
        assert p.read_text() == (CLEAN_DIR / p.name).read_text()
