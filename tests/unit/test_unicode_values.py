"""Non-ASCII personal data through the privacy transforms and the processor: tokenize and detokenize
give back the exact code points (NFC and NFD stay distinct), masks keep only their documented part
of non-ASCII values, and a full event with such values leaves no raw value in its clean form."""

from __future__ import annotations

import json
import os
import random
import unicodedata

import pytest

from streams.ingest import samples
from streams.ingest.processor import EventProcessor
from streams.records import Accepted, SourceRef
from streams.ingest.producer import encode_event, event_key
from streams.privacy.transforms import SubjectCipher
from streams.privacy.transforms.mask import mask
from streams.schema import codec
from streams.schema.registry import SchemaRegistry
from streams.settings import REPO_ROOT

VALUES = [
    "Zoë Ωmega 李雷 🙂",
    unicodedata.normalize("NFD", "Zoë Ångström"),
    "e\u0301\u0301\u0301",  # stacked combining marks
    "\u0301 leading combining mark",
    "👩‍👩‍👧‍👦 family (ZWJ sequence)",
    "right-to-left: שלום مرحبا",
    "\u200b zero width space",
]


@pytest.mark.parametrize("value", VALUES)
def test_tokenize_detokenize_and_hash_keep_the_exact_code_points(value):
    cipher = SubjectCipher(os.urandom(64))
    token = cipher.tokenize("name", value)
    assert token.isascii() and value not in token
    assert cipher.detokenize(token) == ("name", value)
    assert cipher.tokenize("name", value) == token  # deterministic
    assert cipher.hash("name", value) == cipher.hash("name", value) and cipher.hash("name", value).isascii()


def test_nfc_and_nfd_spellings_are_different_values():
    """No normalization: the two spellings of 'Zoë' give two tokens, each reversing to itself."""
    cipher = SubjectCipher(os.urandom(64))
    nfc, nfd = unicodedata.normalize("NFC", "Zoë"), unicodedata.normalize("NFD", "Zoë")
    assert nfc != nfd
    t1, t2 = cipher.tokenize("name", nfc), cipher.tokenize("name", nfd)
    assert t1 != t2 and cipher.detokenize(t1)[1] == nfc and cipher.detokenize(t2)[1] == nfd


@pytest.mark.parametrize(("kind", "value", "expected"), [
    ("email", "zoë.ωmega@exämple.de", "***@exämple.de"),
    ("email", "李雷@例子.中国", "***@例子.中国"),
    ("postal_code", "Ü1 4ÄP", "Ü1***"),
    ("postal_code", "東京都123", "東京***"),
    ("phone", "+49 30 ٧٦٥٤٣٢١", "***٢١"),  # Arabic-Indic digits are digits: the last two are kept
    ("phone", "☎ 李雷", "***"),
])
def test_mask_keeps_only_the_documented_part_of_non_ascii_values(kind, value, expected):
    assert mask(kind, value) == expected


@pytest.mark.parametrize("fmt", ["avro", "json"])
def test_event_with_non_ascii_values_is_accepted_and_clean(fmt):
    registry = SchemaRegistry.load_dir(REPO_ROOT / "schemas")
    clean = SchemaRegistry.load_dir(REPO_ROOT / "schemas" / "clean")
    proc = EventProcessor(registry, frozenset({"acme"}), 1_000_000)
    rng = random.Random(5)
    signup = samples.signup("acme", "u-ü", rng, full_name=VALUES[0], phone="+49 30 ٧٦٥٤٣٢١")
    order = samples.order("acme", "u-ü", rng)
    order["shipping_address"].update(recipient_name=VALUES[1], street="Straße der Ärzte 7", city="Zürich",
                                     postal_code="Ü1 4ÄP")
    support = samples.support("acme", "u-ü", rng, body="Grüße 🙂 李雷")
    # The subject id must be ASCII ([A-Za-z0-9._:-]): the non-ASCII one is rejected, not mangled.
    assert not isinstance(proc.process(event_key(signup), encode_event(registry, signup, fmt), SourceRef("raw", 0, 0)),
                          Accepted)
    for e in (signup, order, support):
        e["subject_id"] = "u-1"
        r = proc.process(event_key(e), encode_event(registry, e, fmt), SourceRef("raw", 0, 1))
        assert isinstance(r, Accepted), r
        text = json.dumps(codec.decode(clean, r.value)[1], default=str, ensure_ascii=False)
        for raw in (VALUES[0], VALUES[1], "Straße der Ärzte", "Zürich", "Grüße", "李雷", "٧٦٥٤٣٢١"):
            assert raw not in text, (raw, text)
