"""Fuzzing the decoder and validator (issue 5, point 7).

Random and mutated bytes and JSON go through ``EventProcessor.validate`` and
``finish`` exactly as the worker calls them. For every input:

* the outcome is ``Accepted`` or ``Rejected`` with a reason of the closed set; no exception escapes;
* (where measured) it allocates less than ``MEMORY_BUDGET``, a deterministic bound; how fast hostile
  input is judged is machine-dependent and measured by bench/hostile_inputs_bench.py, not asserted here
  (a decoder that hangs is stopped by the per-test timeout);
* no planted personal data (canaries) reaches the rejection or the DLQ record built from it;
* a payload that validates never fails later in the transform or the encoder
  (``processing_error`` is for poison events and bugs, not for input the validator could judge).

Each hypothesis test has a bounded number of examples; the file runs in a few seconds.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import random
import tracemalloc
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.dlq.reasons import Reason
from streams.dlq.record import encode_dlq
from streams.ingest import samples
from streams.ingest.processor import EventProcessor
from streams.records import Accepted, Rejected, SourceRef, Validated
from streams.ingest.producer import encode_event
from streams.privacy.transforms import SubjectCipher
from streams.schema import codec
from streams.schema.exceptions import SchemaViolation
from streams.schema.json_datum import to_datum
from streams.schema.registry import SchemaRegistry
from streams.settings import Settings
from streams.sinks.store import store_document

REPO = Path(__file__).resolve().parents[2]
REGISTRY = SchemaRegistry.load_dir(REPO / "schemas")
CLEAN_REGISTRY = SchemaRegistry.load_dir(REPO / "schemas" / "clean")
MAX_EVENT_BYTES = Settings().max_event_bytes  # the production default (256 KiB)
PROC = EventProcessor(REGISTRY, ["acme", "globex"], MAX_EVENT_BYTES)
# The decoder must hold even when an operator raises STREAMS_MAX_EVENT_BYTES a lot.
BIG = EventProcessor(REGISTRY, ["acme", "globex"], 4 * 1024 * 1024)
CIPHER = SubjectCipher(os.urandom(64))
SRC = SourceRef(topic="events.raw", partition=2, offset=31337, timestamp_ms=1_700_000_000_000)
NOW = 1_750_000_000_000
MEMORY_BUDGET = 64 * 1024 * 1024  # bytes, peak traced allocation for one record

# Canaries planted in the personal-data fields of every event that gets mutated. Each contains a
# character ('@', ' ', "'") that no echoed name or key hint may contain, so finding one in a
# rejection is a leak, not a coincidence.
CANARY_EMAIL = "fuzz.canary-4417@example.net"
CANARY_NAME = "Quentin O'Canary-Whistle"
CANARY_TEXT = f"call me at +44 20 7946 0958, {CANARY_NAME}"
PLANTED = (CANARY_EMAIL, CANARY_NAME, "canary-4417@", "O'Canary-Whistle", "7946 0958")

TENANT, SUBJECT = "acme", "u-fuzz"
KEY = f"{TENANT}/{SUBJECT}".encode()

# Bounded examples and no per-example deadline: a deadline measures the machine (a shared 2-core CI
# runner), not the decoder; a hang is stopped by the per-test timeout. Large generated inputs are the
# point here, so the health checks about slow or large data are off.
FUZZ = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.data_too_large])
FUZZ_SMALL = settings(FUZZ, max_examples=200)


def planted_events() -> list[dict[str, Any]]:
    rng = random.Random(4417)
    return [
        samples.signup(TENANT, SUBJECT, rng, email=CANARY_EMAIL, full_name=CANARY_NAME, phone="+44 20 7946 0958",
                       birth_date="1984-02-29"),
        samples.order(TENANT, SUBJECT, rng, shipping_address={
            "recipient_name": CANARY_NAME, "street": CANARY_TEXT, "city": "Leeds", "postal_code": "LS1 4AP",
            "country": "GB"}),
        samples.support(TENANT, SUBJECT, rng, reply_to=CANARY_EMAIL, body=CANARY_TEXT),
    ]


EVENTS = planted_events()
AVRO = [encode_event(REGISTRY, e, "avro") for e in EVENTS]
JSON = [encode_event(REGISTRY, e, "json") for e in EVENTS]
ALL_WIRE = AVRO + JSON


# ------------------------------------------------------------------ the property checked for every input


def assert_no_pii(rej: Rejected) -> None:
    texts = [repr(rej), encode_dlq(rej, now_ms=NOW).decode()]
    texts += [str(getattr(rej, f.name)) for f in dataclasses.fields(rej)]
    for text in texts:
        for p in PLANTED:
            assert p not in text, "a planted value reached the rejection"
            assert json.dumps(p)[1:-1] not in text, "a planted value (JSON-escaped) reached the rejection"


def outcome(key: Any, value: Any, proc: EventProcessor = PROC, allow_processing_error: bool = False
            ) -> Accepted | Rejected:
    """One record through both steps, as the worker runs them; checks the property above."""
    v = proc.validate(key, value, SRC)
    assert isinstance(v, (Validated, Rejected)), v
    result = v if isinstance(v, Rejected) else proc.finish(v, CIPHER, NOW)
    assert isinstance(result, (Accepted, Rejected)), result
    if isinstance(result, Rejected):
        assert isinstance(result.reason, Reason) and result.reason is not Reason.INVALID_REQUEST
        assert isinstance(result.detail, str) and result.detail
        assert result.source is SRC
        if isinstance(value, bytes):
            assert result.payload_size == len(value)
        if not allow_processing_error:
            assert result.reason is not Reason.PROCESSING_ERROR, (
                f"validated input failed later: {result.detail} (field {result.field})")
        assert_no_pii(result)
    else:
        # What was accepted is a readable clean event and a storable document.
        entry, _ = codec.decode(CLEAN_REGISTRY, result.value)
        assert entry.fingerprint == result.clean_entry.fingerprint
        assert json.loads(store_document(result))["event_id"] == result.event_id
    return result


def within_memory_budget(fn) -> Any:
    tracemalloc.start()
    try:
        result = fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BUDGET, f"peak allocation {peak / 2**20:.1f} MiB"
    return result


# ------------------------------------------------------------------ byte-level mutations


def zigzag_varint(n: int) -> bytes:
    """Avro's long encoding (zigzag + base-128 varint)."""
    z = ((n << 1) ^ (n >> 63)) & (2**64 - 1)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


HUGE_LENGTHS = [2**31 - 1, 2**31, 2**32 + 7, 2**53, 2**62, 2**63 - 1, -1, -(2**31), -(2**63)]
HUGE_VARINTS = [zigzag_varint(n) for n in HUGE_LENGTHS] + [
    b"\xff" * 9 + b"\x01",  # 10-byte varint, above 2**63
    b"\xff" * 32,  # a varint that never ends within the record
    b"\x80" * 20 + b"\x00",  # over-long encoding of zero
]


def _varint_end(data: bytearray, i: int) -> int:
    j = i
    while j < len(data) and data[j] & 0x80 and j - i < 10:
        j += 1
    return min(j + 1, len(data))


@st.composite
def mutated(draw: st.DrawFn, bases: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(bases)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite", "splice", "varint",
                                   "duplicate"]))
        i = draw(st.integers(0, len(data)))
        if op == "flip" and data:
            i = min(i, len(data) - 1)
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 16))]
        elif op == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[i:i + len(chunk)] = chunk
        elif op == "splice":
            other = draw(st.sampled_from(ALL_WIRE))
            data = data[:i] + other[draw(st.integers(0, len(other))):]
        elif op == "varint":
            data[i:_varint_end(data, i)] = draw(st.sampled_from(HUGE_VARINTS))
        elif op == "duplicate" and data:
            j = draw(st.integers(0, len(data)))
            lo, hi = min(i, j), max(i, j)
            data[hi:hi] = data[lo:hi]
    return bytes(data)


@FUZZ
@given(st.one_of(
    st.binary(max_size=512),
    st.tuples(st.sampled_from([codec.MAGIC, codec.MAGIC + AVRO[0][2:10], codec.MAGIC + AVRO[1][2:10], b"{", b" \n{",
                               b'{"schema":"order_placed",', b'{"schema":"customer_signup","email":"']),
              st.binary(max_size=512)).map(lambda t: t[0] + t[1]),
))
def test_random_bytes(value):
    outcome(KEY, value)


@FUZZ
@given(mutated(AVRO))
def test_mutated_avro(value):
    outcome(KEY, value)


@FUZZ
@given(mutated(JSON))
def test_mutated_json(value):
    outcome(KEY, value)


@FUZZ_SMALL
@given(mutated(ALL_WIRE), st.sampled_from([KEY, None, b"", b"acme/u-fuzz\x00", b"\xff\xfe/u-fuzz"]))
def test_mutated_any_with_keys(value, key):
    r = outcome(key, value)
    if key != KEY:
        assert isinstance(r, Rejected)


# ------------------------------------------------------------------ huge declared lengths (Avro)


@pytest.mark.parametrize("base", range(len(AVRO)), ids=["signup", "order", "support"])
def test_huge_declared_lengths_stay_within_budget(base):
    """Every position of the body, read as a length, set to huge and negative values: bounded memory."""
    data = AVRO[base]
    cases = [data[:i] + v + data[_varint_end(bytearray(data), i):]
             for i in range(codec.HEADER_LEN, len(data)) for v in HUGE_VARINTS]

    def run_all() -> None:
        for value in cases:
            tracemalloc.reset_peak()
            outcome(KEY, value)
            assert tracemalloc.get_traced_memory()[1] < MEMORY_BUDGET

    within_memory_budget(run_all)


def test_huge_string_length_before_the_canary():
    data = AVRO[0]
    i = data.index(CANARY_EMAIL.encode())
    for v in HUGE_VARINTS:
        value = data[: i - 1] + v + data[i:]
        r = within_memory_budget(lambda value=value: outcome(KEY, value))
        assert isinstance(r, Rejected) and r.reason is Reason.UNDECODABLE


def _items_count_at(avro: bytes, event: dict[str, Any]) -> int:
    # The order's items array count follows the order_id string (length-prefixed).
    oid = event["order_id"].encode()
    return avro.index(zigzag_varint(len(oid)) + oid) + 1 + len(oid)


@pytest.mark.parametrize("count", [2**31 - 1, 2**62, -(2**62), 10**6], ids=["int32", "2^62", "negative", "million"])
def test_huge_declared_array_count(count):
    data, i = AVRO[1], _items_count_at(AVRO[1], EVENTS[1])
    value = data[:i] + zigzag_varint(count) + data[i + 1:]
    r = within_memory_budget(lambda: outcome(KEY, value))
    assert isinstance(r, Rejected) and r.reason is Reason.UNDECODABLE


def test_many_tiny_array_items_at_the_size_cap():
    """The densest valid array under the cap (3 bytes an item): accepted, within time and memory."""
    event = copy.deepcopy(EVENTS[1])
    event["items"] = [{"sku": "", "quantity": 0, "unit_price_cents": 0}]
    data = encode_event(REGISTRY, event, "avro")
    i = _items_count_at(data, event)
    n = (MAX_EVENT_BYTES - len(data)) // 3 - 4
    value = data[:i] + zigzag_varint(n) + b"\x00" * (3 * n) + data[i + 4:]
    assert len(value) <= MAX_EVENT_BYTES
    r = outcome(KEY, value)  # validate + finish within TIME_BUDGET, untraced
    assert isinstance(r, Accepted) and len(r.clean_datum["items"]) == n
    within_memory_budget(lambda: outcome(KEY, value))


# ------------------------------------------------------------------ JSON: structure, numbers, types


def _json_bytes(obj: Any, ascii_only: bool = True) -> bytes:
    # ensure_ascii=False + surrogatepass writes a lone surrogate as (invalid) UTF-8 bytes.
    return json.dumps(obj, ensure_ascii=ascii_only, allow_nan=True).encode("utf-8", "surrogatepass")


EDGE_CHARS = ["\ud800", "\udbff", "\udc00", "\udfff", "\x00", "\ufeff", "\u200f", "\u202e", "\u2066", "\u200b",
              "\u2028", "\U0001f600", "\U0010ffff", "\ufffd", "\u0301", "\x7f", "\x1b", "\uffff", "\\", '"',
              "\u00e9"]
EDGE_STRINGS = ["e\u0301", "\U0001f3f3\ufe0f\u200d\U0001f308", "\ud83d\ude00", "\ude00\ud83d", "\u202eexample.com@",
                CANARY_EMAIL + "\ud800", "\ufeff" + CANARY_EMAIL, "\x00" * 8, "\u0661\u0662\u0663\u0664\u0665\u0666"]
EDGE_TEXT = st.one_of(
    st.text(alphabet=st.one_of(st.sampled_from(EDGE_CHARS), st.characters(codec=None, exclude_categories=())),
            max_size=24),
    st.sampled_from(EDGE_STRINGS))
JSON_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([2**31, -(2**31) - 1, 2**63, -(2**63) - 1, 10**40, 0, -0.0, 1.0, 1e308]),
    st.floats(allow_nan=True, allow_infinity=True), EDGE_TEXT,
    st.sampled_from([CANARY_EMAIL, "WEB", "EMAIL", "2024-02-30", "1970-01-01", "0001-01-01T00:00:00+01:00",
                     "9999-12-31T23:59:59-05:00", "2024-05-06T07:08:09Z", str(EVENTS[0]["event_id"])]),
)
JSON_VALUES = st.recursive(JSON_LEAVES, lambda c: st.one_of(st.lists(c, max_size=3),
                                                            st.dictionaries(EDGE_TEXT, c, max_size=3)),
                           max_leaves=8)
FIELD_PATHS = {
    0: [("event_id",), ("tenant_id",), ("subject_id",), ("event_time",), ("purpose",), ("full_name",), ("email",),
        ("phone",), ("birth_date",), ("country",), ("signup_channel",), ("marketing_opt_in",), ("schema",)],
    1: [("order_id",), ("items",), ("items", 0), ("items", 0, "sku"), ("items", 0, "quantity"),
        ("items", 0, "unit_price_cents"), ("total_cents",), ("currency",), ("shipping_address",),
        ("shipping_address", "recipient_name"), ("shipping_address", "street"), ("shipping_address", "city"),
        ("shipping_address", "postal_code"), ("shipping_address", "extra")],
    2: [("ticket_id",), ("channel",), ("reply_to",), ("body",), ("sentiment_hint",), ("event_time",)],
}


def _set(doc: Any, path: tuple, value: Any) -> None:
    for p in path[:-1]:
        try:
            doc = doc[p]
        except (KeyError, IndexError, TypeError):
            return  # an earlier draw replaced or removed the parent
    if isinstance(doc, dict) or (isinstance(doc, list) and isinstance(path[-1], int) and path[-1] < len(doc)):
        doc[path[-1]] = value


def _has_lone_surrogate(obj: Any) -> bool:
    if isinstance(obj, str):
        return any("\ud800" <= c <= "\udfff" for c in obj)
    if isinstance(obj, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in obj.items())
    if isinstance(obj, list):
        return any(_has_lone_surrogate(v) for v in obj)
    return False


def _as_parsed(value: bytes) -> Any:
    # An escaped pair ("\\ud83d\\ude00") parses to one character; the same pair written as raw
    # (surrogatepass) bytes is invalid UTF-8 and stays two lone surrogates here.
    return json.loads(value.decode("utf-8", "surrogatepass"))


@st.composite
def json_event_with(draw: st.DrawFn, values: st.SearchStrategy) -> bytes:
    """A planted event with 1-3 fields (nested ones too) replaced by ``values`` or removed."""
    base = draw(st.integers(0, 2))
    doc = copy.deepcopy(EVENTS[base])
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(FIELD_PATHS[base]))
        if draw(st.integers(0, 9)) == 0 and len(path) == 1 and path[0] in doc:
            del doc[path[0]]
        else:
            _set(doc, path, draw(values))
    return _json_bytes(doc, draw(st.booleans()))


@FUZZ
@given(json_event_with(JSON_VALUES))
def test_json_wrong_types_numbers_and_nesting_per_field(value):
    r = outcome(KEY, value)
    if _has_lone_surrogate(_as_parsed(value)):
        assert isinstance(r, Rejected)


@FUZZ
@given(json_event_with(EDGE_TEXT))
def test_json_unicode_edge_strings_per_field(value):
    r = outcome(KEY, value)
    if _has_lone_surrogate(_as_parsed(value)):  # escaped or as (invalid) UTF-8 bytes: rejected either way
        assert isinstance(r, Rejected)


@pytest.mark.parametrize("text,expected", [
    ('"\\ud800"', Reason.SCHEMA_VIOLATION),  # lone high surrogate, escaped
    ('"\\udc00x"', Reason.SCHEMA_VIOLATION),  # lone low surrogate
    ('"\\udc00\\ud800"', Reason.SCHEMA_VIOLATION),  # a pair in the wrong order
    ('"\\ud83d\\ude00"', None),  # a valid pair: one 4-byte emoji
    ('"\U0001f600"', None),
    ('"a\\u0000b"', None),  # NUL, escaped, is a character like any other
    ('"\ufeff\u200f\u202e\u2066x\u2069"', None),  # BOM and bidi controls inside a string
    ('"\u2028\u2029"', None),
])
@pytest.mark.parametrize("field", ["email", "full_name", "country", "phone"])
def test_json_unicode_string_values(text, expected, field):
    value = _json_bytes(EVENTS[0] | {field: "__PLACEHOLDER__"}).replace(b'"__PLACEHOLDER__"', text.encode("utf-8"))
    r = outcome(KEY, value)
    if expected is None:
        assert isinstance(r, Accepted), r
    else:
        assert isinstance(r, Rejected) and r.reason is expected and r.field == field


@pytest.mark.parametrize("raw", [b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xf0\x80\x80\xaf",
                                 b"\xf4\x90\x80\x80", b"\xff", b"\xfe", b"\x80", b"\xc3", b"\xe2\x82"],
                         ids=["surrogate-hi", "surrogate-lo", "overlong-2", "overlong-3", "overlong-4",
                              "above-max", "ff", "fe", "continuation", "truncated-2", "truncated-3"])
@pytest.mark.parametrize("fmt", ["avro", "json"])
def test_invalid_utf8_in_a_string(raw, fmt):
    """Invalid UTF-8 where a string's bytes are: undecodable in both formats, never a later failure."""
    data = AVRO[0] if fmt == "avro" else JSON[0]
    i = data.index(CANARY_EMAIL.encode())
    value = data[:i] + raw + data[i + len(raw):]  # same length: the Avro length prefix still fits
    r = outcome(KEY, value)
    assert isinstance(r, Rejected) and r.reason is Reason.UNDECODABLE


@pytest.mark.parametrize("prefix", [b"\xef\xbb\xbf", b"\xfe\xff", b"\xff\xfe", b"\x00"], ids=["bom8", "bom16be",
                                                                                             "bom16le", "nul"])
def test_json_with_a_bom_or_nul_prefix(prefix):
    value = prefix + JSON[0]
    r = outcome(KEY, value)
    assert isinstance(r, Rejected) and r.reason is Reason.UNDECODABLE


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-32-le", "utf-16"])
def test_json_in_utf16_or_utf32_is_not_json_here(encoding):
    value = JSON[0].decode().encode(encoding)
    r = outcome(KEY, value)
    assert isinstance(r, Rejected) and r.reason is Reason.UNDECODABLE


@pytest.mark.parametrize("literal,field,expected", [
    ("NaN", "marketing_opt_in", Reason.SCHEMA_VIOLATION),
    ("Infinity", "event_time", Reason.SCHEMA_VIOLATION),
    ("-Infinity", "event_time", Reason.SCHEMA_VIOLATION),
    ("1e999", "event_time", Reason.SCHEMA_VIOLATION),
    ("-0", "event_time", None),
    ("1.0", "event_time", Reason.SCHEMA_VIOLATION),
    ("1e3", "event_time", Reason.SCHEMA_VIOLATION),
    (str(2**63), "event_time", Reason.SCHEMA_VIOLATION),
    (str(-(2**63)), "event_time", Reason.SCHEMA_VIOLATION),  # a valid long, not a valid datetime
    (str(2**63 - 1), "event_time", Reason.SCHEMA_VIOLATION),
    ("9" * 4300, "event_time", Reason.SCHEMA_VIOLATION),
    ("9" * 4301, "event_time", Reason.UNDECODABLE),  # Python's int-parsing limit: not JSON we can read
    ("9" * 200_000, "event_time", Reason.UNDECODABLE),
    ("0." + "1" * 200_000, "event_time", Reason.SCHEMA_VIOLATION),
    ("1" + "0" * 400 + "e-400", "event_time", Reason.SCHEMA_VIOLATION),
    ("true", "event_time", Reason.SCHEMA_VIOLATION),
    ("[]", "email", Reason.SCHEMA_VIOLATION),
    ("{}", "email", Reason.SCHEMA_VIOLATION),
    ("null", "email", Reason.SCHEMA_VIOLATION),
    ("null", "phone", None),
    ('"2024-02-30"', "birth_date", Reason.SCHEMA_VIOLATION),
    ('"+10000-01-01"', "birth_date", Reason.SCHEMA_VIOLATION),
])
def test_json_number_and_literal_edge_cases(literal, field, expected):
    doc = EVENTS[0] | {field: "__PLACEHOLDER__"}
    value = _json_bytes(doc).replace(b'"__PLACEHOLDER__"', literal.encode())
    r = outcome(KEY, value)
    if expected is None:
        assert isinstance(r, Accepted), r
    else:
        assert isinstance(r, Rejected) and r.reason is expected, r
        if expected is Reason.SCHEMA_VIOLATION:
            assert r.field == field


@pytest.mark.parametrize("dup,expected", [
    (b'"email":"x@example.org"', None),  # the last member wins (Python's json), and is the one transformed
    (b'"tenant_id":"nosuchtenant"', Reason.UNKNOWN_TENANT),
    (b'"schema":"order_placed"', Reason.SCHEMA_VIOLATION),
    (b'"schema":"no_such_schema"', Reason.UNKNOWN_SCHEMA),
    (b'"subject_id":"someone-else"', Reason.KEY_MISMATCH),
    (b'"email":"' + CANARY_EMAIL.encode() + b'","email":5', Reason.SCHEMA_VIOLATION),
])
def test_json_duplicate_keys(dup, expected):
    value = JSON[0][:-1] + b"," + dup + b"}"
    r = outcome(KEY, value)
    if expected is None:
        assert isinstance(r, Accepted)
        assert r.clean_datum["email"] == CIPHER.tokenize("email", "x@example.org")
    else:
        assert isinstance(r, Rejected) and r.reason is expected, r


# ------------------------------------------------------------------ deep nesting


def _nested(depth: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    if kind == "object":
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b'[{"a":' * (depth // 2) + b"[]" + b"}]" * (depth // 2)


@pytest.mark.parametrize("kind", ["array", "object", "mixed"])
@pytest.mark.parametrize("where", ["root", "field", "item", "unclosed"])
@pytest.mark.parametrize("depth", [100_000, 900])
def test_deeply_nested_json(kind, where, depth):
    """10^5 levels: a rejection (not a RecursionError out of the worker), in bounded time and memory."""
    inner = _nested(depth, kind)
    if where == "unclosed":
        inner = inner[: len(inner) // 2]
    if where == "root":
        value = inner
    elif where == "item":
        value = JSON[1].replace(b'"items":[', b'"items":[' + inner + b",", 1)
    else:
        value = JSON[0][:-1] + b',"email":' + inner + b"}"
    if not value.lstrip().startswith(b"{"):
        value = b'{"schema":"customer_signup","x":' + value + b"}"
    r = within_memory_budget(lambda: outcome(KEY, value, proc=BIG))
    assert isinstance(r, Rejected)
    assert r.reason in (Reason.UNDECODABLE, Reason.SCHEMA_VIOLATION, Reason.UNKNOWN_SCHEMA)
    if depth == 100_000 and where != "unclosed":
        assert r.reason is Reason.UNDECODABLE and "deep" in r.detail


def test_nested_just_under_the_recursion_limit_many_times():
    """Many nests a little shallower than the limit: parsed, then rejected, without blowing up."""
    nest = _nested(400, "array")
    value = b'{"schema":"customer_signup","email":[' + b",".join([nest] * 300) + b"]}"
    assert len(value) <= MAX_EVENT_BYTES
    r = within_memory_budget(lambda: outcome(KEY, value))
    assert isinstance(r, Rejected) and r.reason is Reason.SCHEMA_VIOLATION


def test_map_keys_must_be_valid_unicode():
    schema = {"type": "map", "values": "string"}
    assert to_datum(schema, {"k\U0001f600": "v"}, "m") == {"k\U0001f600": "v"}
    with pytest.raises(SchemaViolation) as err:
        to_datum(schema, {"\ud800": "v"}, "m")
    assert "\ud800" not in str(err.value)


# ------------------------------------------------------------------ oversized


@pytest.mark.parametrize("kind", ["garbage", "avro", "json", "json-deep"])
def test_oversized_is_not_decoded(kind):
    n = MAX_EVENT_BYTES + 1
    value = {
        "garbage": b"\xff" * n,
        "avro": AVRO[0][:10] + b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f" + CANARY_EMAIL.encode() * n,
        "json": JSON[0][:-1] + b',"pad":"' + CANARY_EMAIL.encode() * (n // len(CANARY_EMAIL)) + b'"}',
        "json-deep": b"{" + b"[" * n,
    }[kind]
    assert len(value) > MAX_EVENT_BYTES
    r = within_memory_budget(lambda: outcome(KEY, value))
    assert isinstance(r, Rejected) and r.reason is Reason.OVERSIZED
    assert r.event_type is None


def test_sixteen_mib_record_is_refused_quickly():
    value = b"{" + CANARY_EMAIL.encode() * (16 * 2**20 // len(CANARY_EMAIL))
    r = outcome(KEY, value)
    assert r.reason is Reason.OVERSIZED and r.payload_size == len(value)


# ------------------------------------------------------------------ keys and record types


@FUZZ_SMALL
@given(st.one_of(st.none(), st.binary(max_size=300), EDGE_TEXT.map(lambda s: s.encode("utf-8", "surrogatepass")),
                 st.sampled_from([b"\xff" * 1_000_000, KEY * 50_000, f"acme/{CANARY_EMAIL}".encode(),
                                  f"{CANARY_NAME}/u-fuzz".encode(), b"acme/u-fuzz\n", "acme/u-fuzz".encode("utf-16")])),
       st.integers(0, len(ALL_WIRE) - 1))
def test_garbage_keys(key, i):
    r = outcome(key, ALL_WIRE[i])
    if key == KEY:
        assert isinstance(r, Accepted)
    else:
        assert isinstance(r, Rejected) and r.reason is Reason.KEY_MISMATCH
        dkey = json.loads(encode_dlq(r))["key"]
        assert (dkey is None) == (key is None)
        assert dkey is None or dkey["subject"] is None or dkey["subject"].startswith("p_")


@pytest.mark.parametrize("key", ["acme/u-fuzz", 12345, 1.5, object(), ["acme", "u-fuzz"],
                                 bytearray(KEY), memoryview(KEY), memoryview(b"\xff" * 64)],
                         ids=["str", "int", "float", "object", "list", "bytearray", "memoryview", "memoryview-junk"])
def test_keys_of_the_wrong_type(key):
    r = outcome(key, AVRO[2])
    if isinstance(key, (bytearray, memoryview)) and bytes(key) == KEY:
        assert isinstance(r, Accepted)
    else:
        assert isinstance(r, Rejected) and r.reason is Reason.KEY_MISMATCH


@pytest.mark.parametrize("value", [JSON[0].decode(), 7, 1.5, ["x"], {"schema": "customer_signup"}, object(),
                                   bytearray(JSON[0]), memoryview(AVRO[0])],
                         ids=["str", "int", "float", "list", "dict", "object", "bytearray", "memoryview"])
@pytest.mark.parametrize("key", [KEY, "acme/u-fuzz", None], ids=["bytes-key", "str-key", "no-key"])
def test_values_of_the_wrong_type(value, key):
    """A caller bug (not bytes from Kafka) is a rejection too, never an exception out of validate()."""
    r = outcome(key, value, allow_processing_error=True)
    if not isinstance(value, (bytearray, memoryview)):
        assert isinstance(r, Rejected)


def test_garbage_headers_are_never_read():
    """The worker builds its record from key, value and coordinates only; headers cannot affect it."""
    from streams.app import _raw_record
    from streams.ingest.batch import RawRecord

    headers = [(b"\xff\xfe", b"\x00" * 100_000), ("content-type", None), (None, CANARY_EMAIL.encode()),
               ("\ud800", b"\xed\xa0\x80"), ("schema", b"order_placed")] * 100
    msg = SimpleNamespace(key=KEY, value=JSON[2], topic="events.raw", partition=1, offset=9, timestamp=1.5,
                          headers=headers)
    raw = _raw_record(SimpleNamespace(message=msg))
    assert raw == RawRecord(KEY, JSON[2], "events.raw", 1, 9, 1500)
    assert isinstance(outcome(raw.key, raw.value), Accepted)


# ------------------------------------------------------------------ the planted values really are there


def test_the_canaries_are_in_the_fuzzed_payloads():
    for wire in ALL_WIRE[:1] + ALL_WIRE[3:4]:
        assert CANARY_EMAIL.encode() in wire
    for e in EVENTS:
        assert isinstance(outcome(KEY, encode_event(REGISTRY, e, "avro")), Accepted)
        assert isinstance(outcome(KEY, encode_event(REGISTRY, e, "json")), Accepted)
