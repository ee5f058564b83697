"""Pinned outputs of the privacy policy: what is on the wire must not move when the code does.

The clean schemas' fingerprints travel in every clean event (single-object
encoding), and tokens, hashes and masks are joined on by consumers, so a
refactoring of the transforms must leave them byte-identical. The values below
were computed by the if-chain implementation before the transform registry
replaced it; a change here is a wire-format change, not a test to update.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
from typing import Any

import pytest

from streams.privacy.policy import rules_of
from streams.privacy.transforms import PolicyApplier, SubjectCipher
from streams.schema.clean import derive_clean, derive_clean_source, render
from streams.schema.registry import SchemaRegistry
from streams.settings import REPO_ROOT

RAW = SchemaRegistry.load_dir(REPO_ROOT / "schemas")
KEY = bytes(range(64))  # a fixed subject key: the pins are a function of (value, key)

# event type -> (clean fingerprint, sha256 of the rendered clean schema, docs included)
CLEAN_PINS = {
    "customer_signup": ("5941193be39e64cf", "85ad761a4c6b954e8b00c79e9bb74bf7818b7d378cce7a087d376f3415b98017"),
    "order_placed": ("621da4a0262786c4", "4eaf394faedcd878afb9cfd6732aacf021306060f119497f584c08b44f2a6ec2"),
    "support_message": ("e36a90816936256a", "85bfb761792c04625447e62d61ff1deae23f23eb8ee4da4080c6674636eacb1d"),
}

# event type -> (the annotated part of a raw datum, what the policy makes of it with KEY)
EVENT_PINS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "customer_signup": (
        {"full_name": "Zoë Ångström", "email": "jane.doe@example.com", "phone": "+49 30 1234567",
         "birth_date": dt.date(1984, 2, 29)},
        {"full_name": "tok.name.7cyrUvjyhuFo4cG24IwWd9kOURYnw8iw7ExfNALdnA",
         "email": "tok.email.Wt4jch2t0LrMWiRKSinAQrEG78lW2Cr6z_qQpR4HRYv-vYVZ",
         "phone": "***67", "birth_date": 1984},
    ),
    "order_placed": (
        {"shipping_address": {"recipient_name": "Ada Lovelace", "street": "12 Sample Street", "city": "Berlin",
                              "postal_code": "10115"}},
        {"shipping_address": {"recipient_name": "tok.name.ohDWs2A6_nUBdWdeyx5IfBgTMYFF4-rzniW3uA", "street": "",
                              "city": "tok.address.U3I30tFGMhsrqMgTsw3ghs6prEGrVQ", "postal_code": "10***"}},
    ),
    "support_message": (
        {"reply_to": "grace@example.org", "body": "My parcel has not arrived yet."},
        {"reply_to": "hash.email.5d329268a0d2553f6cfb04dbfa7450b6", "body": ""},
    ),
}


@pytest.mark.parametrize("raw", list(RAW), ids=lambda e: e.event_type)
def test_clean_schema_fingerprints_are_pinned(raw):
    fp, digest = CLEAN_PINS[raw.event_type]
    assert derive_clean(raw).fingerprint_hex == fp
    assert hashlib.sha256(render(derive_clean_source(raw)).encode()).hexdigest() == digest


def test_every_schema_is_pinned():
    assert {e.event_type for e in RAW} == set(CLEAN_PINS) == set(EVENT_PINS)


@pytest.mark.parametrize("event_type", sorted(EVENT_PINS))
def test_policy_outputs_are_pinned(event_type):
    datum, expected = EVENT_PINS[event_type]
    rules = rules_of(RAW.by_name(event_type).source)
    assert PolicyApplier(rules).apply(copy.deepcopy(datum), SubjectCipher(KEY)) == expected


def test_pinned_token_reverses_with_the_same_key():
    token = EVENT_PINS["customer_signup"][1]["email"]
    assert SubjectCipher(KEY).detokenize(token) == ("email", "jane.doe@example.com")


def _record(*fields: dict[str, Any]) -> dict[str, Any]:
    return {"type": "record", "name": "P", "namespace": "pins", "fields": list(fields)}


def test_the_other_branches_are_pinned():
    """Branches the published schemas do not reach: a nullable redact, a timestamp, an IP mask, no '@'."""
    rules = rules_of(_record(
        {"name": "note", "type": ["null", "string"], "pii": "free_text", "transform": "redact"},
        {"name": "seen", "type": {"type": "long", "logicalType": "timestamp-millis"}, "pii": "date_time",
         "transform": "generalize"},
        {"name": "ip", "type": "string", "pii": "ip_address", "transform": "mask"},
        {"name": "mail", "type": "string", "pii": "email", "transform": "mask"},
        {"name": "id", "type": "string", "pii": "identifier", "transform": "hash"},
    ))
    datum = {"note": "call me", "seen": dt.datetime(2024, 3, 1, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
             "ip": "192.168.10.77", "mail": "no-at-sign", "id": "DE89 3704 0044 0532 0130 00"}
    assert PolicyApplier(rules).apply(datum, SubjectCipher(KEY)) == {
        "note": None, "seen": dt.date(2024, 3, 2), "ip": "192.168.*.*", "mail": "***",
        "id": "hash.identifier.b9e332e309896614adc71c855a7ebb5a"}
