"""EventProcessor: one outcome per raw record, and no personal data in any rejection."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import random
import time
import uuid
from pathlib import Path

import pytest

import streams.ingest.processor as processor_mod
from streams.dlq.reasons import Reason
from streams.dlq.record import encode_dlq
from streams.ingest import samples
from streams.dlq.record import DlqSealer, dlq_document
from streams.ingest.processor import EventProcessor
from streams.records import Accepted, Rejected, SourceRef, Validated, Withheld
from streams.ingest.producer import encode_event, event_key
from streams.schema import codec
from streams.schema.clean import LINEAGE_FIELD
from streams.schema.registry import SchemaRegistry

REPO = Path(__file__).resolve().parents[2]
CANARY = "CANARY-7731@example.com"
CANARY2 = "Zelda Canaryfield"
SRC = SourceRef(topic="events.raw", partition=3, offset=98765, timestamp_ms=1_700_000_000_000)
NOW = 1_750_000_000_000
FORMATS = ["avro", "json"]
MAKERS = [samples.signup, samples.order, samples.support]
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry.load_dir(REPO / "schemas")


@pytest.fixture(scope="module")
def clean_registry() -> SchemaRegistry:
    return SchemaRegistry.load_dir(REPO / "schemas" / "clean")


@pytest.fixture(scope="module")
def proc(registry) -> EventProcessor:
    return EventProcessor(registry, ["acme", "globex"], max_event_bytes=256 * 1024)


def pii_event(maker=samples.signup, tenant="acme", subject="u1", **overrides):
    """A valid event with canaries planted in its personal-data fields."""
    planted = {
        samples.signup: {"email": CANARY, "full_name": CANARY2, "phone": CANARY},
        samples.order: {"shipping_address": {"recipient_name": CANARY2, "street": CANARY, "city": "Berlin",
                                             "postal_code": "10115", "country": "DE"}},
        samples.support: {"reply_to": CANARY, "body": f"hi, I am {CANARY2}, mail me at {CANARY}"},
    }[maker]
    return maker(tenant, subject, random.Random(11), **(planted | overrides))


def wire(registry, event, fmt):
    return event_key(event), encode_event(registry, event, fmt)


def run(proc, key, value, **kw):
    return proc.process(key, value, SRC, now_ms=NOW, **kw)


def assert_clean(rej: Rejected, *planted: str) -> None:
    """No text of the rejection, nor the DLQ record built from it, carries a planted value."""
    assert isinstance(rej, Rejected)
    planted = (CANARY, CANARY2, *planted)
    for f in dataclasses.fields(rej):
        v = getattr(rej, f.name)
        for p in planted:
            assert p not in str(v), f"{f.name} leaks a planted value"
    dlq = encode_dlq(rej, now_ms=NOW).decode()
    for p in planted:
        assert p not in repr(rej)
        assert p not in dlq
        assert json.dumps(p)[1:-1] not in dlq


def dlq_key(rej: Rejected) -> dict | None:
    return dlq_document(rej, now_ms=NOW)["key"]


def assert_key_pseudonymized(rej: Rejected, tenant: str = "acme") -> None:
    key = dlq_key(rej)
    assert key["shape"] == "tenant/subject" and key["tenant"] == tenant
    assert key["subject"].startswith("p_") and len(key["subject"]) == 26


def assert_key_withheld(rej: Rejected) -> None:
    key = dlq_key(rej)
    assert key["tenant"] is None and key["subject"] is None and key["fingerprint"].startswith("v0:")


def assert_rejected(result, reason: Reason, value: bytes | None, *planted: str) -> Rejected:
    assert isinstance(result, Rejected), result
    assert result.reason is reason
    assert result.source == SRC
    assert result.payload_size == (len(value) if value is not None else 0)
    doc = dlq_document(result, now_ms=NOW)
    assert (doc["payload_fingerprint"] is not None) == (value is not None)
    if value is not None:
        assert doc["payload_fingerprint"] != hashlib.sha256(value).hexdigest()  # keyed, not a plain hash
    assert_clean(result, *planted)
    return result


# ------------------------------------------------------------------ Accepted


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("maker", MAKERS, ids=lambda m: m.__name__)
def test_accepted(proc, registry, clean_registry, maker, fmt):
    event = maker("acme", "u00042", random.Random(5))
    key, value = wire(registry, event, fmt)
    a = run(proc, key, value)
    assert isinstance(a, Accepted), a
    raw = registry.by_name(event["schema"])

    assert a.key == f"u00042/{event['event_id']}".encode() and a.partition_key == b"u00042"
    assert a.subject == "u00042" and a.tenant == "acme"
    assert a.event_id == event["event_id"] and a.event_type == raw.event_type
    assert a.event_time_ms == event["event_time"]
    assert a.source is SRC
    assert a.clean_entry.fullname == raw.fullname.replace("io.streams.events.", "io.streams.events.clean.")

    lineage = a.clean_datum[LINEAGE_FIELD]
    assert lineage == {
        "source_topic": "events.raw", "source_partition": 3, "source_offset": 98765,
        "raw_schema_fingerprint": raw.fingerprint_hex, "policy_version": raw.policy_version,
        "processed_at": NOW,
    }

    # The value is readable with nothing but the published clean schemas.
    clean_entry, datum = codec.decode(clean_registry, a.value)
    assert clean_entry.fingerprint == a.clean_entry.fingerprint
    assert clean_entry.fullname == a.clean_entry.fullname
    assert datum[LINEAGE_FIELD]["processed_at"] == EPOCH + dt.timedelta(milliseconds=NOW)
    assert datum[LINEAGE_FIELD]["source_offset"] == 98765
    assert datum[LINEAGE_FIELD]["raw_schema_fingerprint"] == raw.fingerprint_hex
    assert datum[LINEAGE_FIELD]["policy_version"] == raw.policy_version
    assert str(datum["event_id"]) == event["event_id"]
    assert datum["event_time"] == EPOCH + dt.timedelta(milliseconds=event["event_time"])
    from streams.privacy.policy import rules_of

    annotated = {r.path.split(".")[0] for r in rules_of(raw.source)}
    for k, v in event.items():
        if k in ("schema", "event_id", "event_time"):
            continue
        if k in annotated:
            # Personal data never reaches the clean event as it was (policy applied; see test_privacy_*).
            if isinstance(v, str) and v:
                assert datum[k] != v, k
                assert v not in a.value.decode("latin-1"), k
        else:
            assert datum[k] == v, k


@pytest.mark.parametrize("maker", MAKERS, ids=lambda m: m.__name__)
def test_avro_and_json_give_the_same_clean_event(proc, registry, maker):
    event = maker("globex", "s-1", random.Random(8))
    a1 = run(proc, *wire(registry, event, "avro"))
    a2 = run(proc, *wire(registry, event, "json"))
    assert isinstance(a1, Accepted) and isinstance(a2, Accepted)
    assert a1.value == a2.value
    assert a1.event_id == a2.event_id and a1.event_time_ms == a2.event_time_ms


def test_accepted_normalises_event_id(proc, registry):
    event = samples.support("acme", "u1", random.Random(1))
    event["event_id"] = event["event_id"].upper()
    a = run(proc, *wire(registry, event, "json"))
    assert isinstance(a, Accepted)
    assert a.event_id == event["event_id"].lower()
    assert a.clean_datum["event_id"] == a.event_id


def test_accepted_iso_event_time(proc, registry):
    event = samples.signup("acme", "u1", event_time="2024-05-06T07:08:09.250Z")
    a = run(proc, *wire(registry, event, "json"))
    assert isinstance(a, Accepted)
    assert a.event_time_ms == 1714979289250


def test_processed_at_defaults_to_now(proc, registry):
    before = int(time.time() * 1000)
    a = proc.process(*wire(registry, samples.signup("acme", "u1"), "avro"), SRC)
    after = int(time.time() * 1000)
    assert isinstance(a, Accepted)
    assert before <= a.clean_datum[LINEAGE_FIELD]["processed_at"] <= after


@pytest.mark.parametrize("ms", [0, 1, -1, 999, 1_700_000_000_123, 1_999_999_999_999])
def test_event_time_ms_exact(proc, registry, ms):
    a = run(proc, *wire(registry, samples.signup("acme", "u1", event_time=ms), "avro"))
    assert a.event_time_ms == ms


@pytest.mark.parametrize("ms", [-65526, -65523, 68_784_612_948_055])
def test_event_time_ms_exact_outside_the_usual_range(proc, registry, ms):
    a = run(proc, *wire(registry, samples.signup("acme", "u1", event_time=ms), "avro"))
    assert a.event_time_ms == ms


def test_whitespace_before_json_is_accepted(proc, registry):
    key, value = wire(registry, samples.support("acme", "u1"), "json")
    assert isinstance(run(proc, key, b"\n  " + value), Accepted)


def test_max_event_bytes_is_inclusive(registry):
    key, value = wire(registry, samples.signup("acme", "u1"), "avro")
    assert isinstance(EventProcessor(registry, ["acme"], len(value)).process(key, value, SRC), Accepted)
    rej = EventProcessor(registry, ["acme"], len(value) - 1).process(key, value, SRC)
    assert isinstance(rej, Rejected) and rej.reason is Reason.OVERSIZED


# ------------------------------------------------------------------ undecodable


@pytest.mark.parametrize("value", [None, b""], ids=["none", "empty"])
def test_empty_value(proc, value):
    rej = assert_rejected(run(proc, b"acme/u1", value), Reason.UNDECODABLE, value)
    assert rej.detail == "empty value"
    assert dlq_key(rej)["shape"] == "tenant/subject"  # no tenant was read: the key's tenant is not confirmed
    assert_key_withheld(rej)


@pytest.mark.parametrize("value", [b"\x00" + CANARY.encode(), CANARY.encode(), b'["' + CANARY.encode() + b'"]',
                                   b"\xc3"],
                         ids=["binary", "text", "json-array", "half-magic"])
def test_neither_avro_nor_json(proc, value):
    rej = assert_rejected(run(proc, b"acme/u1", value), Reason.UNDECODABLE, value)
    assert "neither" in rej.detail


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated(proc, registry, fmt):
    key, value = wire(registry, pii_event(), fmt)
    cut = value[: value.index(CANARY.encode()) + 5]
    assert_rejected(run(proc, key, cut), Reason.UNDECODABLE, cut)


def test_avro_trailing_bytes(proc, registry):
    key, value = wire(registry, pii_event(samples.support), "avro")
    bad = value + CANARY.encode()
    rej = assert_rejected(run(proc, key, bad), Reason.UNDECODABLE, bad)
    assert "trailing" in rej.detail


def test_avro_huge_string_length(proc, registry):
    """A string that claims about 2**62 bytes is rejected without allocating for the claim."""
    import tracemalloc

    key, value = wire(registry, pii_event(), "avro")
    i = value.index(CANARY.encode())
    bad = value[: i - 1] + b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f" + value[i:]
    tracemalloc.start()
    try:
        result = run(proc, key, bad)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert_rejected(result, Reason.UNDECODABLE, bad)
    assert peak < 1024 * 1024, f"peak allocation {peak} bytes for a {len(bad)}-byte record"


def test_json_too_deep(proc):
    value = b'{"schema":"customer_signup","email":"' + CANARY.encode() + b'","x":' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    rej = assert_rejected(run(proc, b"acme/u1", value), Reason.UNDECODABLE, value)
    assert "deep" in rej.detail


# ------------------------------------------------------------------ unknown_schema


def test_unknown_avro_fingerprint(proc, registry):
    key, value = wire(registry, pii_event(), "avro")
    bad = codec.MAGIC + b"\x11" * 8 + value[codec.HEADER_LEN:]
    rej = assert_rejected(run(proc, key, bad), Reason.UNKNOWN_SCHEMA, bad)
    assert "1111111111111111" not in rej.detail and rej.schema_fingerprint is None


@pytest.mark.parametrize("schema_value", ["account_closed", CANARY, None], ids=["unknown", "pii", "missing"])
def test_unknown_json_schema(proc, schema_value):
    event = pii_event()
    if schema_value is None:
        del event["schema"]
    else:
        event["schema"] = schema_value
    value = json.dumps(event).encode()
    assert_rejected(run(proc, b"acme/u1", value), Reason.UNKNOWN_SCHEMA, value)


# ------------------------------------------------------------------ schema_violation


@pytest.mark.parametrize("mutate,field", [
    (lambda e: e.update(marketing_opt_in=CANARY), "marketing_opt_in"),
    (lambda e: e.update(email=[CANARY]), "email"),
    (lambda e: e.update(signup_channel=CANARY), "signup_channel"),
    (lambda e: e.update(event_time=CANARY), "event_time"),
    (lambda e: e.update(event_id=CANARY), "event_id"),
    (lambda e: e.pop("email"), "email"),
    (lambda e: e.update(extra_field=CANARY), "<root>"),
], ids=["bool", "string", "enum", "timestamp", "uuid", "missing", "unknown-field"])
def test_json_schema_violation(proc, mutate, field):
    event = pii_event()
    mutate(event)
    value = json.dumps(event).encode()
    rej = assert_rejected(run(proc, b"acme/u1", value), Reason.SCHEMA_VIOLATION, value)
    assert rej.field == field
    assert rej.detail.startswith(f"field '{field}'")
    assert "extra_field" not in rej.detail and "extra_field" not in encode_dlq(rej).decode()


def test_json_nested_violation(proc):
    event = pii_event(samples.order)
    event["items"][0]["quantity"] = CANARY
    event["shipping_address"]["city"] = 5
    value = json.dumps(event).encode()
    rej = assert_rejected(run(proc, b"acme/u1", value), Reason.SCHEMA_VIOLATION, value)
    assert rej.field == "items[0].quantity"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("subject", ["", "has space", "a/b", "x" * 129, "Zoë"], ids=["empty", "space", "slash", "long",
                                                                                  "non-ascii"])
def test_bad_subject_id(proc, registry, fmt, subject):
    event = pii_event(subject=subject)
    value = encode_event(registry, event, fmt)
    rej = assert_rejected(run(proc, b"acme/u1", value), Reason.SCHEMA_VIOLATION, value)
    assert rej.field == "subject_id"
    assert subject not in rej.detail or subject == ""
    assert rej.tenant == "acme" and rej.event_type == "customer_signup" and rej.event_id == event["event_id"]
    assert_key_pseudonymized(rej)


@pytest.mark.parametrize("fmt", FORMATS)
def test_email_as_subject_does_not_leak_through_the_key(proc, registry, fmt):
    event = pii_event(subject=CANARY)  # a producer using the e-mail as subject id
    key, value = wire(registry, event, fmt)
    assert key == f"acme/{CANARY}".encode()
    rej = run(proc, key, value)
    assert isinstance(rej, Rejected) and rej.reason is Reason.SCHEMA_VIOLATION and rej.field == "subject_id"
    assert_clean(rej)


# ------------------------------------------------------------------ missing_tenant / unknown_tenant


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("tenant", ["", "   "], ids=["empty", "blank"])
def test_missing_tenant(proc, registry, fmt, tenant):
    event = pii_event(tenant=tenant)
    value = encode_event(registry, event, fmt)
    rej = assert_rejected(run(proc, b"acme/u1", value), Reason.MISSING_TENANT, value)
    assert rej.tenant is None
    assert rej.event_type == "customer_signup" and rej.event_id == event["event_id"]
    assert rej.schema_fingerprint == registry.by_name("customer_signup").fingerprint_hex


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("tenant", ["initech", "ACME", "acme ", CANARY, "a" * 64], ids=["not-onboarded", "upper",
                                                                                     "space", "pii", "too-long"])
def test_unknown_tenant(proc, registry, fmt, tenant):
    event = pii_event(tenant=tenant)
    value = encode_event(registry, event, fmt)
    rej = assert_rejected(run(proc, b"acme/u1", value), Reason.UNKNOWN_TENANT, value, tenant)
    assert rej.tenant is None  # an unverified tenant is not echoed
    assert rej.event_type == "customer_signup"


def test_unknown_tenant_with_pii_key(proc, registry):
    event = pii_event(tenant=CANARY)
    key, value = wire(registry, event, "avro")
    rej = assert_rejected(run(proc, key, value), Reason.UNKNOWN_TENANT, value)
    assert dlq_key(rej)["shape"] == "other"
    assert_key_withheld(rej)


def test_tenant_set_is_the_only_authority(registry):
    p = EventProcessor(registry, ["globex"], 1 << 20)
    rej = p.process(*wire(registry, samples.signup("acme", "u1"), "avro"), SRC)
    assert isinstance(rej, Rejected) and rej.reason is Reason.UNKNOWN_TENANT
    assert isinstance(p.process(*wire(registry, samples.signup("globex", "u1"), "avro"), SRC), Accepted)


# ------------------------------------------------------------------ oversized


@pytest.mark.parametrize("fmt", FORMATS)
def test_oversized(registry, fmt):
    p = EventProcessor(registry, ["acme"], max_event_bytes=100)
    key, value = wire(registry, pii_event(samples.support, body=CANARY * 20), fmt)
    rej = p.process(key, value, SRC)
    assert isinstance(rej, Rejected) and rej.reason is Reason.OVERSIZED
    assert rej.detail == f"{len(value)} bytes > limit 100"
    assert rej.payload_size == len(value)
    assert rej.event_type is None and rej.schema_fingerprint is None  # not decoded at all
    assert_clean(rej)


def test_oversized_garbage_is_not_decoded(registry):
    p = EventProcessor(registry, ["acme"], max_event_bytes=64)
    value = b"\x00" * 65
    rej = p.process(b"acme/u1", value, SRC)
    assert rej.reason is Reason.OVERSIZED  # checked before any decoding


# ------------------------------------------------------------------ key_mismatch


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("key", [None, b"acme/u2", b"globex/u1", b"u1", b"acme/u1 ", b"ACME/u1", b""],
                         ids=["none", "other-subject", "other-tenant", "no-tenant", "trailing-space", "upper", "empty"])
def test_key_mismatch(proc, registry, fmt, key):
    event = pii_event()
    value = encode_event(registry, event, fmt)
    rej = assert_rejected(run(proc, key, value), Reason.KEY_MISMATCH, value)
    assert rej.tenant == "acme" and rej.event_id == event["event_id"]
    assert rej.field is None


def test_key_mismatch_with_pii_key(proc, registry):
    value = encode_event(registry, pii_event(), "avro")
    key = f"{CANARY} {CANARY2}".encode()
    rej = assert_rejected(run(proc, key, value), Reason.KEY_MISMATCH, value)
    assert dlq_key(rej)["shape"] == "other" and dlq_key(rej)["size"] == len(key)
    assert_key_withheld(rej)
    assert dlq_document(rej, now_ms=NOW)["subject"].startswith("p_")  # the event's subject, by pseudonym


# ------------------------------------------------------------------ processing_error


@pytest.mark.parametrize("fmt", FORMATS)
def test_processing_error_in_transform(proc, registry, monkeypatch, fmt):
    def boom(value):
        raise ValueError(f"cannot convert {CANARY} ({CANARY2})")

    monkeypatch.setattr(processor_mod, "_millis", boom)
    key, value = wire(registry, pii_event(), fmt)
    rej = assert_rejected(run(proc, key, value), Reason.PROCESSING_ERROR, value)
    assert rej.detail == "ValueError in the transform"
    assert_key_pseudonymized(rej)


def test_processing_error_in_encoder(proc, registry, monkeypatch):
    def boom(entry, datum):
        raise RuntimeError(f"encoder choked on {datum.get('email')}")

    monkeypatch.setattr(codec, "encode", boom)
    key, value = wire(registry, pii_event(), "json")
    rej = assert_rejected(run(proc, key, value), Reason.PROCESSING_ERROR, value)
    assert rej.detail == "RuntimeError in the transform"


def test_processing_error_on_unexpected_value_type(proc):
    # A memoryview has a length and a hash but no .lstrip(): the transform fails, the stream goes on.
    value = memoryview(b'{"schema": "customer_signup"}')
    rej = proc.process(b"acme/u1", value, SRC)  # type: ignore[arg-type]
    assert isinstance(rej, Rejected) and rej.reason is Reason.PROCESSING_ERROR
    assert rej.payload_size == len(value)


# ------------------------------------------------------------------ the DLQ record's key


def _with_key(key) -> Rejected:
    return Rejected(reason=Reason.KEY_MISMATCH, detail="d", source=SRC, payload_size=0, key=Withheld(key))


SEALER = DlqSealer.ephemeral()
SEALER.tenants = {"acme", "globex"}


@pytest.mark.parametrize("key", [b"acme/u1", b"globex/u00042", b"acme/a.b:c-d_e"])
def test_dlq_key_pseudonymizes_well_shaped_keys(key):
    doc = SEALER.document(_with_key(key))
    tenant, subject = key.decode().split("/")
    assert doc["key"]["tenant"] == tenant and doc["key"]["subject"] == SEALER.pseudonyms(tenant, subject)
    assert subject not in json.dumps(doc)


@pytest.mark.parametrize("key", [b"", b"no-slash", b"acme/u1/extra", b"acme/has space", b"\xff\xfe/u1",
                                 b"acme/" + b"x" * 129, f"{CANARY2}/x".encode(), b"nosuch/u1"],
                         ids=["empty", "no-slash", "two-slashes", "space", "not-utf8", "long", "name", "unknown-tenant"])
def test_dlq_key_withholds_other_keys(key):
    doc = SEALER.document(_with_key(key))
    assert doc["key"]["tenant"] is None and doc["key"]["subject"] is None
    assert doc["key"]["fingerprint"] == SEALER.document(_with_key(key))["key"]["fingerprint"]  # stable
    assert doc["key"]["fingerprint"] != hashlib.sha256(key).hexdigest()
    assert key == b"" or key.decode(errors="replace") not in json.dumps(doc)


def test_dlq_key_none():
    assert SEALER.document(_with_key(None).__class__(reason=Reason.UNDECODABLE, detail="d", source=SRC,
                                                     payload_size=0))["key"] is None


@pytest.mark.parametrize("key", [f"acme/{CANARY}".encode(), b"acme/jane.doe@example.com", b"Jane.Doe/u1"],
                         ids=["canary-subject", "email-subject", "name-tenant"])
def test_dlq_key_withholds_pii_shaped_keys(key):
    doc = SEALER.document(_with_key(key))
    assert doc["key"]["shape"] == "other" and doc["key"]["subject"] is None


# ------------------------------------------------------------------ sweep: no rejection carries PII


def test_no_rejection_carries_planted_values(proc, registry):
    """A sweep over every reason with canaries planted in values; keys are well-shaped here."""
    reasons = set()
    small = EventProcessor(registry, ["acme"], max_event_bytes=64)
    for maker in MAKERS:
        for fmt in FORMATS:
            ev = pii_event(maker)
            key, value = wire(registry, ev, fmt)
            cases = [
                (proc, key, value[:-3]),
                (proc, key, codec.MAGIC + b"\x00" * 8 + value[10:]) if fmt == "avro" else
                (proc, key, value.replace(b'"schema"', b'"schemo"', 1)),
                (proc, key, encode_event(registry, pii_event(maker, tenant=""), fmt)),
                (proc, key, encode_event(registry, pii_event(maker, tenant="initech"), fmt)),
                (proc, b"acme/other", value),
                (small, key, value),
            ]
            if fmt == "json":
                bad = dict(ev, event_time=CANARY)
                cases.append((proc, key, json.dumps(bad).encode()))
            for p, k, v in cases:
                r = p.process(k, v, SRC, now_ms=NOW)
                assert isinstance(r, Rejected)
                assert_clean(r)
                reasons.add(r.reason)
    assert reasons == {Reason.UNDECODABLE, Reason.UNKNOWN_SCHEMA, Reason.MISSING_TENANT, Reason.UNKNOWN_TENANT,
                       Reason.KEY_MISMATCH, Reason.OVERSIZED, Reason.SCHEMA_VIOLATION}


def test_every_reason_is_produced_by_the_code_and_documented(proc, registry):
    """Each Reason is produced by the code that emits it (the processor for events; the privacy
    requests reader for privacy requests), every one of them: none is a dead entry of the enum or the docs."""
    from streams.erasure.reader import PrivacyRequestReader
    from streams.dlq.reasons import REASON_DOCS
    from streams.dlq.record import decode_dlq
    from streams.ops.metrics import Metrics

    assert set(REASON_DOCS) == set(Reason)
    produced: set[Reason] = set()
    ev = pii_event()
    key, value = wire(registry, ev, "json")
    small = EventProcessor(registry, frozenset({"acme"}), max_event_bytes=64)
    from streams.settings import Settings

    bound = EventProcessor(registry, frozenset({"acme", "globex"}), 256 * 1024, sender_of=Settings().tenant_of_raw_topic)
    globex_src = dataclasses.replace(SRC, topic=Settings().tenant_raw_topic("globex"))
    r = bound.process(key, value, globex_src, now_ms=NOW)  # acme's event on globex's own raw topic
    assert isinstance(r, Rejected)
    assert_clean(r)
    produced.add(r.reason)
    # An accepted event whose tenant's topic is gone (the batch sets it aside this way).
    ok = proc.process(key, value, SRC, now_ms=NOW)
    assert isinstance(ok, Accepted)
    r = proc.reject_accepted(ok, Reason.TENANT_UNAVAILABLE, "the tenant's topic does not exist")
    assert_clean(r)
    produced.add(r.reason)
    # A validated event whose tenant's key record is damaged (the batch sets it aside this way;
    # tests/unit/test_key_isolation.py drives the batch itself).
    from streams.ingest.batch import TENANT_KEY_DAMAGED

    v = proc.validate(key, value, SRC)
    assert isinstance(v, Validated)
    r = proc.reject_validated(v, Reason.KEY_ERROR, TENANT_KEY_DAMAGED)
    assert_clean(r)
    produced.add(r.reason)
    for p, k, v, kw in [
        (proc, key, b"\x00\x01 not an event", {}),
        (proc, key, value.replace(b'"customer_signup"', b'"no_such_schema"', 1), {}),
        (proc, key, json.dumps(dict(json.loads(value), birth_date=CANARY)).encode(), {}),
        (proc, key, wire(registry, pii_event(tenant=""), "json")[1], {}),
        (proc, key, wire(registry, pii_event(tenant="initech"), "json")[1], {}),
        (small, key, value, {}),
        (proc, b"acme/someone-else", value, {}),
        (proc, key, value, {"subject_key": lambda t, s: (_ for _ in ()).throw(ConnectionError("down"))}),
    ]:
        r = p.process(k, v, SRC, now_ms=NOW, **kw)
        assert isinstance(r, Rejected), r
        assert_clean(r)
        produced.add(r.reason)

    # A privacy request that does not parse: the reader's DLQ record (its Kafka sink records it).
    sent = []
    reader = PrivacyRequestReader.__new__(PrivacyRequestReader)
    reader.topic, reader.dlq_topic = "privacy.requests", "events.dlq"
    reader.tenants, reader.metrics = frozenset({"acme"}), Metrics()
    reader.kafka = type("Recorder", (), {"deliver": lambda self, recs: sent.extend(recs)})()
    from streams.dlq.record import default_sealer

    reader.dlq = default_sealer()
    reader._apply_one(b'{"type": "erase"}', b"acme/u1", 0, 5)
    assert len(sent) == 1 and sent[0].topic == "events.dlq"
    produced.add(Reason(decode_dlq(sent[0].value)["reason"]))

    assert produced == set(Reason), set(Reason) - produced
    assert {r.value for r in Reason} == {"undecodable", "unknown_schema", "schema_violation", "missing_tenant",
                                         "unknown_tenant", "tenant_unavailable", "key_error", "tenant_mismatch", "oversized",
                                         "key_mismatch", "processing_error", "invalid_request"}


def test_clean_entry_lookup(proc, registry, clean_registry):
    for raw in registry:
        ce = proc.clean_entry(raw)
        assert clean_registry.by_fingerprint(ce.fingerprint) is not None
        assert ce.name == raw.name and ce.fullname.endswith(".clean." + raw.name)


def test_uuid_helper_accepts_uuid_objects():
    u = uuid.uuid4()
    assert processor_mod._safe_uuid(u) == str(u)
    assert processor_mod._safe_uuid(str(u).upper()) == str(u)
    assert processor_mod._safe_uuid(CANARY) is None
    assert processor_mod._safe_uuid(7) is None
