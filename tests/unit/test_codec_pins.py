"""The codec's bytes are the wire format: pinned, so a speed-up (hinted schemas, fewer conversions) cannot change them.

The digests were taken with the codec and processor of commit 88c5195 (fastavro re-parsing the
schema on every call, UUID/datetime conversions in the processor); the schemas are those of
``schemas/``. A change to a schema file changes them legitimately (update the pins with it);
a change to the code must not.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import fastavro
import pytest

from streams.ingest import samples
from streams.ingest.processor import Accepted, EventProcessor, SourceRef
from streams.ingest.producer import encode_event, event_key
from streams.privacy.transforms import SubjectCipher
from streams.schema import codec
from streams.schema.clean import derive_clean
from streams.schema.registry import SchemaRegistry

REPO = Path(__file__).resolve().parents[2]
NOW_MS = 1_700_000_000_000


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry.load_dir(REPO / "schemas")


def _events() -> list[dict]:
    # The samples stamp event_time with the clock: pinned here.
    return [dict(e, event_time=NOW_MS + i) for i, e in enumerate(samples.stream(["ta", "tb"], 300, seed=3))]


def _encodings(registry: SchemaRegistry) -> tuple[list[bytes], list[bytes]]:
    evs = _events()
    raw = [encode_event(registry, e, "avro") for e in evs]
    proc = EventProcessor(registry, ["ta", "tb"], 1_000_000)
    clean = []
    for i, (e, value) in enumerate(zip(evs, raw)):
        v = proc.validate(event_key(e), value, SourceRef("events.raw", 1, i, None))
        a = proc.finish(v, SubjectCipher(hashlib.sha256(v.subject.encode()).digest() * 2), NOW_MS)
        assert isinstance(a, Accepted), a
        clean.append(a.value)
    return raw, clean


def test_raw_and_clean_encodings_are_pinned(registry):
    raw, clean = _encodings(registry)
    assert hashlib.sha256(b"".join(raw)).hexdigest() == \
        "fc3f38469cee76fb9bc6d9507896de933a2596215308466e192858d2cf41483b"
    assert hashlib.sha256(b"".join(clean)).hexdigest() == \
        "ac27107ac6a246d997be30cb093fddf67ae4ef6bd5921f8dd925bbcdedf13a2a"
    firsts = [(len(raw[i]), hashlib.sha256(raw[i]).hexdigest()[:32], hashlib.sha256(clean[i]).hexdigest()[:32])
              for i in range(3)]
    assert firsts == [
        (174, "063f107ff4e8e50c306b23ed9fbeb08e", "f716a95eb60f8fa5e7f9b52a8614ef56"),
        (170, "19939de168ec2636167cfb94999e02a5", "fd5bbb3b971608c4b358bebad8581d08"),
        (168, "248930f0f9254b81123b407900101cba", "7c73a74c312541c3eb7776107b8a3019"),
    ]


def test_hinted_schema_encodes_and_decodes_as_the_plain_parse(registry):
    """The schema the codec reuses gives the bytes (and data) a fresh, unhinted parse gives."""
    raw, clean = _encodings(registry)
    clean_entries = {e.fingerprint: derive_clean(e) for e in registry}
    by_fp = {**{e.fingerprint: e for e in registry}, **{c.fingerprint: c for c in clean_entries.values()}}
    for payload in raw + clean:
        entry = by_fp[payload[2:10]]
        assert entry.hinted is not None and "__fastavro_parsed" in entry.hinted
        plain = fastavro.parse_schema(entry.source, _write_hint=False)
        datum = fastavro.schemaless_reader(io.BytesIO(payload[10:]), plain, None)
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, plain, datum)
        assert codec.encode(entry, datum) == codec.MAGIC + entry.fingerprint + buf.getvalue() == payload
        reg = SchemaRegistry([entry])
        assert codec.decode(reg, payload) == (entry, datum)


def test_entry_without_hint_still_works(registry):
    """A SchemaEntry built by hand (no ``hinted``) falls back to the plain parse."""
    import dataclasses

    entry = registry.by_name("customer_signup")
    bare = dataclasses.replace(entry, hinted=None)
    e = dict(samples.signup("ta", "u1"), event_time=NOW_MS)
    assert codec.encode(bare, codec.decode(registry, encode_event(registry, e, "avro"))[1]) == \
        encode_event(registry, e, "avro")
