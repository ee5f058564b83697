"""Poison events (issue 5, point 8): an event whose privacy transform raises goes to the DLQ, the stream goes on.

A poison event is valid by its schema but makes a transform (or the encoder)
raise. ``EventProcessor.finish`` turns that into ``Rejected(processing_error)``
naming the field and the error's type, never the value; the other events of
the same batch are processed and delivered. Checked through the processor and
through ``BatchPipeline`` with in-test sinks (no broker, no Redis).

The two poison classes the shipped transforms had (a lone surrogate in a
tokenized, hashed or plain string; an ISO timestamp whose UTC time is outside
years 1-9999, which ``generalize`` could not convert and consumers could not
read back) are now schema violations at validation; the tests below check that
and construct the remaining kind: values the transform does not expect (a
decoder bug), a transform or cipher backend that raises on one value.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime as dt
import json
import os
import random
import uuid
from pathlib import Path
from typing import Any, Iterable, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streams.privacy.transforms.mask as mask_transform
from streams.dlq.reasons import Reason
from streams.dlq.record import decode_dlq, encode_dlq
from streams.ingest import samples
from streams.ingest.batch import BatchPipeline, RawRecord
from streams.ingest.processor import EventProcessor
from streams.records import Accepted, Rejected, SourceRef, Validated
from streams.ingest.producer import encode_event
from streams.privacy.transforms import SubjectCipher, TransformFailed
from streams.schema import codec
from streams.schema.registry import SchemaRegistry, make_entry
from streams.settings import Settings
from streams.sinks.store import StoreWrite

REPO = Path(__file__).resolve().parents[2]
CANARY = "poison.canary-5150@example.org"
CANARY_NAME = "Ophelia O'Poisonberry"
PLANTED = (CANARY, CANARY_NAME, "canary-5150", "O'Poisonberry")
SRC = SourceRef(topic="events.raw", partition=0, offset=77, timestamp_ms=1_700_000_000_000)
NOW = 1_750_000_000_000

# A schema of the kind the policy allows but the shipped schemas do not use: a timestamp field
# generalized to its UTC day. A timestamp whose UTC day is before year 1 or after 9999 (an ISO
# string with an offset) cannot be generalized: it used to reach the transform and raise there.
PROBE_SOURCE = {
    "type": "record", "name": "DeviceSeen", "namespace": "io.streams.tests",
    "fields": [
        {"name": "event_id", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "tenant_id", "type": "string"},
        {"name": "subject_id", "type": "string"},
        {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "purpose", "type": "string", "default": "analytics"},
        {"name": "seen_at", "type": {"type": "long", "logicalType": "timestamp-millis"}, "pii": "date_time",
         "transform": "generalize"},
        {"name": "owner_email", "type": "string", "pii": "email", "transform": "tokenize"},
    ],
}
OUT_OF_RANGE_TIMES = ["0001-01-01T00:00:00+01:00", "0001-01-01T05:59:59.999+06:00", "9999-12-31T23:59:59-05:00",
                      "9999-12-31T23:00:00-01:00"]
POISON = "POISON-"  # the marker that makes the patched mask transform raise (see poisoned_mask)


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    raw = SchemaRegistry.load_dir(REPO / "schemas")
    return SchemaRegistry(list(raw) + [make_entry(PROBE_SOURCE)])


@pytest.fixture(scope="module")
def proc(registry) -> EventProcessor:
    return EventProcessor(registry, ["acme", "globex"], 256 * 1024)


@pytest.fixture(scope="module")
def clean_registry(proc, registry) -> SchemaRegistry:
    return SchemaRegistry([proc.clean_entry(e) for e in registry])


def probe(subject: str = "u1", tenant: str = "acme", **overrides: Any) -> dict[str, Any]:
    rng = random.Random(hash(subject) & 0xFFFF)
    return {"schema": "device_seen", "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "tenant_id": tenant, "subject_id": subject, "event_time": 1_700_000_000_000,
            "seen_at": "2024-05-06T07:08:09+02:00", "owner_email": CANARY} | overrides


def wire(registry, event: dict[str, Any], fmt: str = "json") -> tuple[bytes, bytes]:
    return f"{event['tenant_id']}/{event['subject_id']}".encode(), encode_event(registry, event, fmt)


def assert_no_pii(rej: Rejected) -> None:
    texts = [repr(rej), encode_dlq(rej, now_ms=NOW).decode()] + [str(getattr(rej, f.name))
                                                                  for f in dataclasses.fields(rej)]
    for text in texts:
        for p in PLANTED:
            assert p not in text
            assert json.dumps(p)[1:-1] not in text


def assert_poison(rej: Any, field: str | None, value: bytes | None = None) -> Rejected:
    assert isinstance(rej, Rejected), rej
    assert rej.reason is Reason.PROCESSING_ERROR
    assert rej.field == field
    if field is not None:
        assert f"field '{field}'" in rej.detail
    if value is not None:
        assert rej.payload_size == len(value)
    assert rej.tenant == "acme" and rej.event_id and rej.event_type  # enough to find and triage it
    assert_no_pii(rej)
    return rej


# ------------------------------------------------------------------ one poison event through the processor


def test_the_probe_schema_works(proc, registry, clean_registry):
    for fmt in ("json", "avro"):
        a = proc.process(*wire(registry, probe(), fmt), SRC, now_ms=NOW)
        assert isinstance(a, Accepted), a
        _, clean = codec.decode(clean_registry, a.value)
        assert clean["seen_at"] == dt.date(2024, 5, 6)
        assert clean["owner_email"].startswith("tok.email.")


def raw_json(event: dict[str, Any]) -> tuple[bytes, bytes]:
    """Like ``wire`` but without the producer's validation: what a foreign producer may send."""
    return f"{event['tenant_id']}/{event['subject_id']}".encode(), json.dumps(event).encode()


@pytest.fixture
def poisoned_mask(monkeypatch):
    """A mask transform that raises on odd values, quoting the value in its error (as many libraries do)."""
    real_mask = mask_transform.mask

    def mask(kind: str, value: str) -> str:
        if POISON in value:
            raise ValueError(f"cannot mask {value!r} as {kind}")
        return real_mask(kind, value)

    monkeypatch.setattr(mask_transform, "mask", mask)


@pytest.mark.parametrize("seen_at", OUT_OF_RANGE_TIMES)
@pytest.mark.parametrize("field", ["seen_at", "event_time"])
def test_timestamp_outside_the_utc_range_is_a_schema_violation(proc, registry, clean_registry, seen_at, field):
    """It used to pass validation: in seen_at generalize raised (OverflowError), in event_time the clean
    event was delivered but no consumer could decode it."""
    key, value = raw_json(probe(**{field: seen_at}))
    rej = proc.process(key, value, SRC, now_ms=NOW)
    assert isinstance(rej, Rejected) and rej.reason is Reason.SCHEMA_VIOLATION and rej.field == field
    assert seen_at not in rej.detail
    assert_no_pii(rej)


@pytest.mark.parametrize("t", ["0001-01-01T00:00:00-01:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z",
                               "9999-12-31T20:00:00-03:00"])
def test_timestamp_at_the_ends_of_the_range_is_accepted_and_readable(proc, registry, clean_registry, t):
    a = proc.process(*raw_json(probe(seen_at=t, event_time=t)), SRC, now_ms=NOW)
    assert isinstance(a, Accepted), a
    _, clean = codec.decode(clean_registry, a.value)
    assert clean["event_time"] == dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
    assert clean["seen_at"] == clean["event_time"].astimezone(dt.timezone.utc).date()


@pytest.mark.parametrize("seen_at", OUT_OF_RANGE_TIMES)
def test_generalize_of_an_unrepresentable_day_is_a_poison_event(proc, registry, seen_at):
    """Should such a value reach the transform anyway (a decoder bug), only this event is rejected."""
    v = _validated(proc, registry, probe())
    datum = dict(v.datum, seen_at=dt.datetime.fromisoformat(seen_at))
    rej = assert_poison(proc.finish(dataclasses.replace(v, datum=datum), SubjectCipher(os.urandom(64)), NOW),
                        "seen_at", v.value)
    assert rej.detail == "OverflowError in the generalize transform of field 'seen_at'"
    assert seen_at not in rej.detail
    assert decode_dlq(encode_dlq(rej))["field"] == "seen_at"


def test_an_odd_value_that_makes_a_transform_raise(proc, registry, poisoned_mask):
    key, value = wire(registry, samples.signup("acme", "u1", phone=f"{POISON}{CANARY}", email=CANARY))
    v = proc.validate(key, value, SRC)
    assert isinstance(v, Validated)  # valid by its schema ...
    rej = assert_poison(proc.finish(v, SubjectCipher(os.urandom(64)), NOW), "phone", value)  # ... poison in finish
    assert rej.detail == "ValueError in the mask transform of field 'phone'"


def test_policy_applier_names_the_field_not_the_value():
    from streams.privacy.policy import rules_of
    from streams.privacy.transforms import PolicyApplier

    applier = PolicyApplier(rules_of(PROBE_SOURCE))
    datum = {"seen_at": dt.datetime.fromisoformat(OUT_OF_RANGE_TIMES[0]), "owner_email": CANARY}
    with pytest.raises(TransformFailed) as err:
        applier.apply(datum, SubjectCipher(os.urandom(64)))
    assert (err.value.field, err.value.transform, err.value.error) == ("seen_at", "generalize", "OverflowError")
    assert err.value.__cause__ is None and err.value.__suppress_context__  # the original text is not chained
    assert OUT_OF_RANGE_TIMES[0] not in str(err.value) and "0001" not in str(err.value)


def _validated(proc, registry, event: dict[str, Any]) -> Validated:
    v = proc.validate(*wire(registry, event), SRC)
    assert isinstance(v, Validated), v
    return v


@pytest.mark.parametrize("maker,path,bad", [
    (samples.signup, ("email",), 42),  # tokenize of an int
    (samples.signup, ("full_name",), b"Ophelia O'Poisonberry"),  # tokenize of bytes
    (samples.signup, ("phone",), 5550100),  # mask of an int
    (samples.support, ("body",), None),  # redact of None: the rule skips nulls, no error (control case)
    (samples.signup, ("birth_date",), "1984-02-29"),  # generalize of a str
    (samples.support, ("reply_to",), {"x": CANARY}),  # hash of a dict
    (samples.order, ("shipping_address", "postal_code"), 10115),  # mask of an int
    (samples.order, ("shipping_address", "city"), "\ud800" + CANARY_NAME),  # tokenize of a lone surrogate
], ids=["tokenize-int", "tokenize-bytes", "mask-int", "redact-none", "generalize-str", "hash-dict", "mask-int-nested",
        "tokenize-surrogate"])
def test_transform_of_an_unexpected_value_is_rejected_with_its_field(proc, registry, maker, path, bad):
    """Values no decoder should produce (a decoder bug, a new library version): the transform raises."""
    v = _validated(proc, registry, maker("acme", "u1", random.Random(3), email=CANARY) if maker is samples.signup
                   else maker("acme", "u1", random.Random(3)))
    datum = copy.deepcopy(v.datum)
    node = datum
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = bad
    rej = proc.finish(dataclasses.replace(v, datum=datum), SubjectCipher(os.urandom(64)), NOW)
    if bad is None:  # body is a non-null string: the encoder, not the transform, refuses the null
        assert_poison(rej, None, v.value)
        return
    assert_poison(rej, ".".join(path), v.value)
    assert "in the" in rej.detail and "transform" in rej.detail


def test_an_error_message_quoting_the_value_is_not_forwarded(proc, registry, poisoned_mask):
    v = _validated(proc, registry, samples.signup("acme", "u1", phone=f"+1 555 0100 {POISON}{CANARY}"))
    rej = assert_poison(proc.finish(v, SubjectCipher(os.urandom(64)), NOW), "phone")
    assert rej.detail == "ValueError in the mask transform of field 'phone'"
    assert POISON not in repr(rej)


class RefusingCipher(SubjectCipher):
    """A cipher whose backend refuses one value (say, an HSM limit), quoting it in the error."""

    __slots__ = ()

    def tokenize(self, kind: str, value: str) -> str:
        if value == CANARY_NAME:
            raise RuntimeError(f"backend refused {value}")
        return super().tokenize(kind, value)


def test_a_cipher_failure_is_a_rejection(proc, registry):
    v = _validated(proc, registry, samples.signup("acme", "u1", full_name=CANARY_NAME, email=CANARY))
    rej = assert_poison(proc.finish(v, RefusingCipher(os.urandom(64)), NOW), "full_name")
    assert rej.detail == "RuntimeError in the tokenize transform of field 'full_name'"


def test_a_huge_value_is_transformed_within_the_size_cap(proc, registry):
    """The largest string the size cap lets through tokenizes, hashes and masks without trouble."""
    big = "x" * (250 * 1024)
    for event in (samples.signup("acme", "u1", full_name=big), samples.support("acme", "u1", reply_to=big + "@a.b"),
                  samples.signup("acme", "u1", phone="1" * (250 * 1024))):
        a = proc.process(*wire(registry, event), SRC, now_ms=NOW)
        assert isinstance(a, Accepted), a


def test_the_encoder_failing_after_the_transform_is_a_rejection(proc, registry, monkeypatch):
    def boom(entry, datum):
        raise TypeError(f"bad datum {datum}")

    monkeypatch.setattr(codec, "encode", boom)
    rej = proc.process(*wire(registry, samples.signup("acme", "u1", email=CANARY)), SRC, now_ms=NOW)
    assert_poison(rej, None)
    assert rej.detail == "TypeError in the transform"


def test_a_lone_surrogate_never_reaches_the_transform(proc, registry):
    """It used to: the tokenizer raised UnicodeEncodeError. Now the validator names the field."""
    event = samples.signup("acme", "u1", email=CANARY + "\ud800")
    value = json.dumps(event).encode()
    rej = proc.process(b"acme/u1", value, SRC, now_ms=NOW)
    assert isinstance(rej, Rejected) and rej.reason is Reason.SCHEMA_VIOLATION and rej.field == "email"
    assert_no_pii(rej)


# ------------------------------------------------------------------ a batch with poison events in it


class Keys:
    """The KeyStore's get-or-create contract, in memory."""

    def __init__(self) -> None:
        self.keys: dict[tuple[str, str], bytes] = {}

    def subject_keys(self, tenant: str, subjects: Iterable[str], create: bool = True) -> dict[str, bytes]:
        return {s: self.keys.setdefault((tenant, s), os.urandom(64)) for s in subjects}


class Kafka:
    def __init__(self) -> None:
        self.records: list[Any] = []

    async def deliver_async(self, records: Sequence[Any], timeout: float = 30.0) -> None:
        self.records.extend(records)


class Store:
    def __init__(self) -> None:
        self.events: list[Accepted] = []
        self.stats: list[dict[str, dict[str, int]]] = []

    async def write_batch(self, events: Iterable[Accepted], batch_id: str = "") -> StoreWrite:
        events = list(events)
        self.events.extend(events)
        return StoreWrite(len(events))

    async def add_stats(self, counts: dict[str, dict[str, int]], leave: Any = None) -> frozenset[str]:
        self.stats.append(counts)
        return frozenset()


def pipeline(proc: EventProcessor) -> tuple[BatchPipeline, Kafka, Store]:
    kafka, store = Kafka(), Store()
    return BatchPipeline(Settings(), proc, kafka, store, Keys()), kafka, store  # type: ignore[arg-type]


def raw(key: bytes | None, value: Any, offset: int) -> RawRecord:
    return RawRecord(key, value, "events.raw", 0, offset, 1_700_000_000_000)


def poison_signup(subject: str) -> dict[str, Any]:
    return samples.signup("acme", subject, email=CANARY, full_name=CANARY_NAME, phone=f"{POISON}{subject}")


def mixed_batch(registry) -> tuple[list[RawRecord], list[str]]:
    """Good events around poison and bad ones; returns the records and what each must become."""
    rng = random.Random(5)
    items: list[tuple[bytes | None, Any, str]] = []
    for i in range(3):
        items.append((*wire(registry, samples.signup("acme", f"g{i}", rng), "avro"), "accepted"))
        items.append((*wire(registry, poison_signup(f"p{i}"), "avro" if i % 2 else "json"), "processing_error"))
        items.append((*wire(registry, samples.order("globex", f"g{i}", rng), "json"), "accepted"))
        items.append((*wire(registry, probe(f"q{i}"), "avro"), "accepted"))
        items.append((*raw_json(probe(f"r{i}", seen_at=OUT_OF_RANGE_TIMES[i])), "schema_violation"))
    items.insert(0, (*wire(registry, poison_signup("first")), "processing_error"))
    items.append((b"acme/x", b"\x00garbage " + CANARY.encode(), "undecodable"))
    items.append((b"acme/x", json.dumps(samples.support("acme", "x", reply_to=CANARY + "\udc00")).encode(),
                  "schema_violation"))
    items.append((b"acme/x", CANARY, "processing_error"))  # a str, not bytes: a caller bug
    items.append((*wire(registry, poison_signup("last")), "processing_error"))
    records = [raw(k, v, offset) for offset, (k, v, _) in enumerate(items)]
    return records, [want for _, _, want in items]


def _kind(o: Any) -> str:
    return "accepted" if isinstance(o, Accepted) else o.reason.value


def test_batch_outcomes_keep_going_past_poison_events(proc, registry, poisoned_mask):
    records, want = mixed_batch(registry)
    p, _, _ = pipeline(proc)
    outcomes = asyncio.run(p.outcomes(records))
    assert [_kind(o) for o in outcomes] == want
    for o, r in zip(outcomes, records):
        assert o.source.offset == r.offset  # one outcome per record, in order
        if isinstance(o, Rejected):
            assert_no_pii(o)
            if o.reason is Reason.PROCESSING_ERROR and o.event_type:
                assert o.field == "phone" and o.event_type == "customer_signup"


def test_batch_handle_delivers_the_good_and_dead_letters_the_poison(proc, registry, poisoned_mask):
    records, want = mixed_batch(registry)
    p, kafka, store = pipeline(proc)
    result = asyncio.run(p.handle(records))
    n_ok = want.count("accepted")
    assert result.accepted == n_ok
    assert sum(result.rejected.values()) == len(records) - n_ok
    assert result.rejected["processing_error"] == want.count("processing_error")
    assert len(store.events) == n_ok
    settings = Settings()
    tenant_records = [r for r in kafka.records if r.topic != settings.dlq_topic]
    dlq = [r for r in kafka.records if r.topic == settings.dlq_topic]
    assert len(tenant_records) == n_ok and len(dlq) == len(records) - n_ok
    assert {r.topic for r in tenant_records} == {settings.tenant_topic("acme"), settings.tenant_topic("globex")}
    docs = [decode_dlq(r.value) for r in dlq]
    assert sorted(d["source"]["offset"] for d in docs) == [i for i, w in enumerate(want) if w != "accepted"]
    poison = [d for d in docs if d["reason"] == "processing_error" and d["event_type"]]
    assert len(poison) == 5 and all(d["field"] == "phone" and d["tenant"] == "acme" for d in poison)
    assert all(POISON.encode() not in r.value for r in dlq)
    for r in dlq:
        for p_ in PLANTED:
            assert p_.encode() not in r.value and json.dumps(p_)[1:-1].encode() not in r.value
    assert store.stats and store.stats[0]["acme"]["dlq_processing_error"] == 5


def test_batch_with_a_transform_bug_on_one_event(proc, registry, monkeypatch):
    """An unforeseen bug that hits one event (here: one event id) costs that event only."""
    rng = random.Random(9)
    events = [samples.support("acme", f"s{i}", rng) for i in range(20)]
    doomed = events[7]["event_id"]
    applier = proc._policy["support_message"]
    real_apply = applier.apply

    def apply(datum, cipher):
        if str(datum["event_id"]) == doomed:
            raise KeyError(f"{datum['reply_to']}")
        return real_apply(datum, cipher)

    monkeypatch.setattr(applier, "apply", apply)
    records = [raw(*wire(registry, e, "avro"), i) for i, e in enumerate(events)]
    p, kafka, store = pipeline(proc)
    result = asyncio.run(p.handle(records))
    assert result.accepted == 19 and result.rejected == {"processing_error": 1}
    assert doomed not in {a.event_id for a in store.events}
    dlq = [decode_dlq(r.value) for r in kafka.records if r.topic == Settings().dlq_topic]
    from streams.dlq.record import default_sealer

    ref = default_sealer().keys.fingerprint("event_id", "acme", doomed.encode())  # the event id, keyed
    assert [d["event_ref"] for d in dlq] == [ref] and dlq[0]["detail"] == "KeyError in the transform"
    assert doomed not in json.dumps(dlq)


POISON_KINDS = ["good-avro", "good-json", "poison", "out-of-range-time", "surrogate", "garbage", "truncated", "not-bytes",
                "oversized", "wrong-key"]


# No deadline: it would measure the (shared) machine; a hang is caught by the per-test timeout.
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(POISON_KINDS), min_size=1, max_size=30))
def test_any_mix_of_good_and_poison_events(proc, registry, poisoned_mask, kinds):
    """Whatever the mix, handle() returns with one outcome per record and every good event delivered."""
    records = []
    for i, kind in enumerate(kinds):
        subject = f"m{i}"
        if kind == "good-avro":
            k, v = wire(registry, samples.order("acme", subject), "avro")
        elif kind == "good-json":
            k, v = wire(registry, probe(subject), "json")
        elif kind == "poison":
            k, v = wire(registry, poison_signup(subject), "avro" if i % 2 else "json")
        elif kind == "out-of-range-time":
            k, v = raw_json(probe(subject, seen_at=OUT_OF_RANGE_TIMES[i % len(OUT_OF_RANGE_TIMES)]))
        elif kind == "surrogate":
            k, v = f"acme/{subject}".encode(), json.dumps(samples.signup("acme", subject, full_name="\ud800")).encode()
        elif kind == "garbage":
            k, v = f"acme/{subject}".encode(), os.urandom(40)
        elif kind == "truncated":
            k, v = wire(registry, samples.signup("acme", subject), "avro")
            v = v[:-7]
        elif kind == "not-bytes":
            k, v = f"acme/{subject}".encode(), CANARY
        elif kind == "oversized":
            k, v = f"acme/{subject}".encode(), b"{" + b" " * (256 * 1024)
        else:
            k, v = b"acme/someone-else", wire(registry, samples.support("acme", subject), "avro")[1]
        records.append(raw(k, v, i))
    p, kafka, store = pipeline(proc)
    result = asyncio.run(p.handle(records))
    good = sum(k.startswith("good") for k in kinds)
    assert result.accepted == good == len(store.events)
    assert sum(result.rejected.values()) == len(kinds) - good
    assert result.rejected.get("processing_error", 0) == kinds.count("poison") + kinds.count("not-bytes")
    assert len(kafka.records) == len(kinds)


def test_a_key_source_that_leaves_a_subject_out_rejects_only_its_events(proc, registry):
    class Forgetful(Keys):
        def subject_keys(self, tenant, subjects, create=True):
            return {s: k for s, k in super().subject_keys(tenant, subjects, create).items() if s != "lost"}

    p = BatchPipeline(Settings(), proc, Kafka(), Store(), Forgetful())  # type: ignore[arg-type]
    records = [raw(*wire(registry, samples.order("acme", subject), "avro"), i)
               for i, subject in enumerate(["kept", "lost", "kept"])]
    outcomes = asyncio.run(p.outcomes(records))
    assert [_kind(o) for o in outcomes] == ["accepted", "processing_error", "accepted"]
    assert outcomes[1].detail == "no subject key returned"
