"""Tokenize, hash, mask, redact and generalize, applied to real events."""

from __future__ import annotations

import datetime as dt
import os
import random

import pytest

from streams.ingest import samples
from streams.privacy.exceptions import TokenError
from streams.privacy.policy import rules_of
from streams.privacy.transforms import PolicyApplier, SubjectCipher, token_kind
from streams.privacy.transforms.generalize import generalize
from streams.privacy.transforms.mask import mask
from streams.schema.json_datum import to_datum
from streams.schema.registry import SchemaRegistry
from streams.settings import REPO_ROOT


@pytest.fixture(scope="module")
def registry():
    return SchemaRegistry.load_dir(REPO_ROOT / "schemas")


def test_tokens_are_deterministic_per_subject_and_reversible():
    k1, k2 = os.urandom(64), os.urandom(64)
    a, b = SubjectCipher(k1), SubjectCipher(k1)
    t = a.tokenize("email", "jane@example.com")
    assert t == b.tokenize("email", "jane@example.com")  # same subject key, same token
    assert t.startswith("tok.email.") and "jane" not in t and token_kind(t) == "email"
    assert b.detokenize(t) == ("email", "jane@example.com")
    other = SubjectCipher(k2)
    assert other.tokenize("email", "jane@example.com") != t  # unlinkable across subjects
    with pytest.raises(TokenError):
        other.detokenize(t)  # another subject's key (or a destroyed one) cannot reverse it


def test_token_kind_is_authenticated():
    c = SubjectCipher(os.urandom(64))
    t = c.tokenize("email", "x@y.z")
    forged = t.replace("tok.email.", "tok.phone.")
    with pytest.raises(TokenError):
        c.detokenize(forged)
    for bad in ("", "tok.email", "tok.email.!!", "plain text"):
        with pytest.raises(TokenError):
            c.detokenize(bad)


def test_hash_is_keyed_and_one_way():
    k = os.urandom(64)
    h = SubjectCipher(k).hash("email", "jane@example.com")
    assert h == SubjectCipher(k).hash("email", "jane@example.com")
    assert h != SubjectCipher(os.urandom(64)).hash("email", "jane@example.com")
    assert h.startswith("hash.email.") and len(h.split(".")[-1]) == 32


@pytest.mark.parametrize("kind,value,expected", [
    ("email", "jane.doe@example.com", "***@example.com"),
    ("email", "no-at-sign", "***"),
    ("phone", "+49 30 1234567", "***67"),
    ("phone", "12", "***"),
    ("postal_code", "10115", "10***"),
    ("postal_code", "ab", "***"),
    ("ip_address", "192.168.10.77", "192.168.*.*"),
])
def test_mask_keeps_only_the_documented_part(kind, value, expected):
    assert mask(kind, value) == expected


def test_generalize():
    assert generalize(dt.date(1990, 5, 17)) == 1990
    assert generalize(dt.datetime(2024, 3, 1, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5)))) == dt.date(2024, 3, 2)


@pytest.mark.parametrize("maker", [samples.signup, samples.order, samples.support], ids=lambda m: m.__name__)
def test_no_raw_pii_survives_the_policy(registry, maker):
    canary = "canary.7731@example.com"
    event = maker("acme", "u1", random.Random(3))
    entry = registry.by_name(event.pop("schema"))
    rules = rules_of(entry.source)
    # Plant the canary in every annotated string field.
    for r in rules:
        node = event
        parts = r.path.split(".")
        for p in parts[:-1]:
            node = node[p]
        if r.transform != "generalize":
            node[parts[-1]] = canary
    datum = to_datum(entry.expanded, event, "")
    cipher = SubjectCipher(os.urandom(64))
    out = PolicyApplier(rules).apply(datum, cipher)
    text = repr(out)
    assert "canary.7731" not in text
    for r in rules:
        node = out
        for p in r.path.split(".")[:-1]:
            node = node[p]
        value = node[r.path.split(".")[-1]]
        if r.transform == "tokenize":
            assert cipher.detokenize(value) == (r.kind, canary)
        elif r.transform == "redact":
            assert value in ("", None)
        elif r.transform == "mask" and r.kind == "email":
            assert value == "***@example.com"


def test_cipher_repr_hides_the_key():
    key = bytes(range(64))
    assert key.hex() not in repr(SubjectCipher(key)) and "hidden" in repr(SubjectCipher(key))
