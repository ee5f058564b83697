"""The published clean schemas (schemas/clean/<type>/v<N>.avsc) are exactly what the code derives from raw version N."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.schema.clean import (LINEAGE_FIELD, clean_path, derive_clean, derive_clean_source, render, stale_clean,
                                  write_clean_dir)
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


def _published() -> list[str]:
    return sorted(str(p.relative_to(CLEAN_DIR)) for p in CLEAN_DIR.glob("*/*.avsc"))


def test_one_clean_file_per_raw_version():
    assert _published() == sorted(f"{e.event_type}/v{e.version}.avsc" for e in RAW.all_versions())
    assert not list(CLEAN_DIR.glob("*.avsc"))


@pytest.mark.parametrize("raw", RAW.all_versions(), ids=lambda e: f"{e.event_type}-v{e.version}")
def test_published_file_in_sync(raw):
    published = clean_path(CLEAN_DIR, raw).read_text()
    assert published == render(derive_clean_source(raw)), (
        f"schemas/clean/{raw.event_type}/v{raw.version}.avsc is stale: run `streams schemas derive`")
    assert stale_clean(RAW, CLEAN_DIR) == []


def test_a_missing_or_edited_clean_version_is_stale(tmp_path):
    write_clean_dir(RAW, tmp_path)
    (tmp_path / "order_placed" / "v1.avsc").unlink()
    (tmp_path / "support_message" / "v1.avsc").write_text("{}")
    assert stale_clean(RAW, tmp_path) == ["order_placed v1", "support_message v1"]


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
    out = tmp_path / "out"
    written = write_clean_dir(RAW, out)
    assert sorted(str(p.relative_to(out)) for p in written) == _published()
    for p in written:
        assert p.read_text() == (CLEAN_DIR / p.relative_to(out)).read_text()
