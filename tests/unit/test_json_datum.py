"""JSON events validated against the Avro schemas: paths in errors, never values."""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

import pytest

from streams.ingest import samples
from streams.schema.exceptions import DecodeError, SchemaViolation, UnknownSchemaError
from streams.schema.json_datum import decode_json, to_datum
from streams.schema.registry import SchemaRegistry

REPO = Path(__file__).resolve().parents[2]
CANARY = "CANARY-7731@example.com"
UTC = dt.timezone.utc


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry.load_dir(REPO / "schemas")


def enc(event) -> bytes:
    return json.dumps(event).encode()


def assert_no_leak(exc: BaseException, *planted) -> None:
    texts = (str(exc), repr(exc), str(exc.args))
    for p in (CANARY, *planted):
        for t in texts:
            assert str(p) not in t
    assert exc.__cause__ is None


def violation(registry, event, *planted) -> SchemaViolation:
    with pytest.raises(SchemaViolation) as ei:
        decode_json(registry, enc(event))
    assert_no_leak(ei.value, *planted)
    assert str(ei.value) == f"field '{ei.value.field}': expected {ei.value.expected}"
    return ei.value


def order_event(**overrides):
    items = [{"sku": "SKU-1", "quantity": 1, "unit_price_cents": 100},
             {"sku": "SKU-2", "quantity": 2, "unit_price_cents": 250}]
    base = samples.order("acme", "u1", random.Random(2), items=items, total_cents=600)
    return base | overrides


# ------------------------------------------------------------------ valid events


@pytest.mark.parametrize("maker", [samples.signup, samples.order, samples.support], ids=lambda m: m.__name__)
@pytest.mark.parametrize("seed", range(4))
def test_valid_events(registry, maker, seed):
    event = maker("acme", "u7", random.Random(seed))
    entry, datum = decode_json(registry, enc(event))
    assert entry is registry.by_name(event["schema"])
    assert "schema" not in datum
    assert datum["event_time"] == dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(milliseconds=event["event_time"])
    assert datum["tenant_id"] == "acme" and datum["subject_id"] == "u7"
    assert datum["event_id"] == event["event_id"]
    # every schema field is present after defaults are applied
    assert set(datum) == {f["name"] for f in entry.source["fields"]}


@pytest.mark.parametrize("name", ["io.streams.events.CustomerSignup", "CustomerSignup", "customer_signup"])
def test_schema_by_any_name(registry, name):
    entry, _ = decode_json(registry, enc(samples.signup("acme", "u1", schema=name)))
    assert entry.fullname == "io.streams.events.CustomerSignup"


def test_defaults_applied(registry):
    event = samples.signup("acme", "u1")
    for k in ("purpose", "phone", "birth_date", "marketing_opt_in"):
        event.pop(k, None)
    _, datum = decode_json(registry, enc(event))
    assert datum["purpose"] == "analytics"
    assert datum["phone"] is None and datum["birth_date"] is None
    assert datum["marketing_opt_in"] is False


def test_union_and_date_conversion(registry):
    _, datum = decode_json(registry, enc(samples.signup("acme", "u1", phone="+1 555", birth_date="1990-02-28")))
    assert datum["phone"] == "+1 555"
    assert datum["birth_date"] == dt.date(1990, 2, 28)


@pytest.mark.parametrize("value,expected", [
    (0, dt.datetime(1970, 1, 1, tzinfo=UTC)),
    (1700000000123, dt.datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)),
    (-1000, dt.datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ("2024-05-06T07:08:09Z", dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)),
    ("2024-05-06T07:08:09.250Z", dt.datetime(2024, 5, 6, 7, 8, 9, 250000, tzinfo=UTC)),
    ("2024-05-06T09:08:09+02:00", dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)),
])
def test_timestamps_accepted(registry, value, expected):
    _, datum = decode_json(registry, enc(samples.signup("acme", "u1", event_time=value)))
    assert datum["event_time"] == expected
    assert datum["event_time"].utcoffset() is not None


@pytest.mark.parametrize("value", [
    "2024-05-06T07:08:09",  # no timezone
    "2024-05-06",  # a date, naive
    "yesterday",
    "2024-13-06T07:08:09Z",
    "2024-05-06T07:08:09Z" + " " * 40,  # too long
    1.7e12,  # a float
    True,
    None,
    2**63,  # out of long range
    2**62,  # in long range but beyond datetime
    [1],
], ids=["naive", "date-only", "word", "bad-month", "too-long", "float", "bool", "null", "2^63", "2^62", "list"])
def test_timestamps_rejected(registry, value):
    exc = violation(registry, samples.signup("acme", "u1", event_time=value))
    assert exc.field == "event_time"
    assert "timestamp" in exc.expected and "timezone" in exc.expected


@pytest.mark.parametrize("value", ["1990-02-30", "1990/02/01", "19900201", "90-02-01", 19900201, "1990-2-1 "])
def test_dates_rejected(registry, value):
    exc = violation(registry, samples.signup("acme", "u1", birth_date=value))
    assert exc.field == "birth_date"
    assert "date" in exc.expected


def test_uuid_validated(registry):
    exc = violation(registry, samples.signup("acme", "u1", event_id=CANARY))
    assert exc.field == "event_id" and exc.expected == "string (uuid)"
    exc = violation(registry, samples.signup("acme", "u1", event_id=12345))
    assert exc.field == "event_id"


# ------------------------------------------------------------------ violations name the path, never the value


def test_wrong_type_top_level(registry):
    exc = violation(registry, samples.signup("acme", "u1", email=["x", CANARY]))
    assert exc.field == "email" and exc.expected == "string"


def test_nested_record_path(registry):
    event = order_event()
    event["shipping_address"]["city"] = {"name": CANARY}
    exc = violation(registry, event)
    assert exc.field == "shipping_address.city" and exc.expected == "string"


def test_array_item_path(registry):
    event = order_event()
    event["items"][1]["quantity"] = CANARY
    exc = violation(registry, event)
    assert exc.field == "items[1].quantity" and exc.expected == "int"


def test_array_not_a_list(registry):
    exc = violation(registry, order_event(items={"sku": CANARY}))
    assert exc.field == "items" and exc.expected == "array"


def test_nested_record_not_an_object(registry):
    exc = violation(registry, order_event(shipping_address=CANARY))
    assert exc.field == "shipping_address" and "PostalAddress" in exc.expected


def test_unknown_field(registry):
    event = samples.signup("acme", "u1", nickname=CANARY)
    position = list(event).index("nickname") + 1
    exc = violation(registry, event, "nickname")
    assert exc.field == "<root>"
    assert exc.expected == f"only fields of CustomerSignup: 1 unknown member (#{position} of {len(event)})"
    assert exc.record == "CustomerSignup" and exc.positions == [position] and exc.members == len(event)


def test_unknown_nested_field(registry):
    event = order_event()
    event["shipping_address"]["floor"] = CANARY
    exc = violation(registry, event, "floor")
    assert exc.field == "shipping_address" and "of PostalAddress: 1 unknown member" in exc.expected


def test_unknown_fields_are_counted_and_placed_never_named(registry):
    # A name-shaped member (the example) and an email used as a key, at several depths.
    event = samples.signup("acme", "u1", Grace_Hopper_1906=1, **{CANARY: 2})
    exc = violation(registry, event, "Grace_Hopper_1906", "Grace")
    assert exc.positions == [len(event) - 1, len(event)]
    assert "2 unknown members" in exc.expected
    event = order_event()
    event["items"][0][CANARY] = {"Grace_Hopper_1906": 1}
    exc = violation(registry, event, "Grace_Hopper_1906")
    assert exc.field == "items[0]"


def test_many_unknown_members_list_the_first_positions(registry):
    event = samples.signup("acme", "u1", **{f"Ada_Lovelace_{i}": i for i in range(15)})
    exc = violation(registry, event, "Ada_Lovelace")
    assert "15 unknown members" in exc.expected and "and 5 more" in exc.expected and len(exc.positions) == 15


def test_map_keys_are_positions():
    schema = {"type": "record", "name": "R", "fields": [
        {"name": "attrs", "type": {"type": "map", "values": "int"}}]}
    with pytest.raises(SchemaViolation) as ei:
        to_datum(schema, {"attrs": {"Grace_Hopper_1906": 1, CANARY: "x"}}, "")
    assert ei.value.field == "attrs{#2}"
    assert_no_leak(ei.value, "Grace_Hopper_1906")
    with pytest.raises(SchemaViolation) as ei:
        to_datum(schema, {"attrs": {"ok": 1, "\ud800" + CANARY: 1}}, "")
    assert ei.value.field == "attrs{#2}" and ei.value.expected == "map key (valid Unicode)"


@pytest.mark.parametrize("missing", ["email", "event_id", "tenant_id", "country", "signup_channel"])
def test_missing_required(registry, missing):
    event = samples.signup("acme", "u1", full_name=CANARY)
    del event[missing]
    exc = violation(registry, event)
    assert exc.field == missing and exc.expected.endswith("(required)")


def test_missing_required_nested(registry):
    event = order_event()
    del event["items"][0]["sku"]
    exc = violation(registry, event)
    assert exc.field == "items[0].sku" and exc.expected == "string (required)"


@pytest.mark.parametrize("value", ["FAX", "web", CANARY, 1, None])
def test_wrong_enum(registry, value):
    exc = violation(registry, samples.signup("acme", "u1", signup_channel=value))
    assert exc.field == "signup_channel" and exc.expected == "one of WEB|MOBILE|STORE"


@pytest.mark.parametrize("value", [2**31, -(2**31) - 1, 10**20])
def test_int_out_of_range(registry, value):
    event = order_event()
    event["items"][0]["quantity"] = value
    exc = violation(registry, event, value)
    assert exc.field == "items[0].quantity" and exc.expected == "int"


@pytest.mark.parametrize("value", [2**31 - 1, -(2**31)])
def test_int_bounds_accepted(registry, value):
    event = order_event()
    event["items"][0]["quantity"] = value
    _, datum = decode_json(registry, enc(event))
    assert datum["items"][0]["quantity"] == value


def test_long_out_of_range(registry):
    exc = violation(registry, order_event(total_cents=2**63), 2**63)
    assert exc.field == "total_cents" and exc.expected == "long"
    _, datum = decode_json(registry, enc(order_event(total_cents=2**63 - 1)))
    assert datum["total_cents"] == 2**63 - 1


@pytest.mark.parametrize("value", [True, False])
def test_bool_is_not_an_int(registry, value):
    event = order_event()
    event["items"][1]["quantity"] = value
    exc = violation(registry, event)
    assert exc.field == "items[1].quantity"


@pytest.mark.parametrize("value", [1.5, 1.0, "1"])
def test_float_or_string_is_not_an_int(registry, value):
    exc = violation(registry, order_event(total_cents=value))
    assert exc.field == "total_cents"


@pytest.mark.parametrize("value", [0, 1, "true", None])
def test_int_is_not_a_bool(registry, value):
    exc = violation(registry, samples.signup("acme", "u1", marketing_opt_in=value))
    assert exc.field == "marketing_opt_in" and exc.expected == "boolean"


def test_union_violation_names_branches(registry):
    exc = violation(registry, samples.signup("acme", "u1", phone=7731))
    assert exc.field == "phone" and exc.expected == "null or string"


def test_null_for_required_string(registry):
    exc = violation(registry, samples.support("acme", "u1", body=None))
    assert exc.field == "body" and exc.expected == "string"


def test_to_datum_root_not_object(registry):
    entry = registry.by_name("support_message")
    with pytest.raises(SchemaViolation) as ei:
        to_datum(entry.expanded, [CANARY], "")
    assert ei.value.field == "<root>"
    assert_no_leak(ei.value)


# ------------------------------------------------------------------ envelope: JSON, object, schema member


@pytest.mark.parametrize("payload", [b"[1, 2]", b'"CANARY-7731@example.com"', b"42", b"null", b"true"],
                         ids=["array", "string", "number", "null", "bool"])
def test_non_object_json(registry, payload):
    with pytest.raises(DecodeError, match="must be an object") as ei:
        decode_json(registry, payload)
    assert_no_leak(ei.value)


@pytest.mark.parametrize("payload", [b'{"schema": "customer_signup", "email": "CANARY-7731@example.com"',
                                     b"\xff\xfe{}", b"", b"{'a': 1}",
                                     b'{"email": "CANARY-7731@example.com\xff"}'],
                         ids=["truncated", "bad-utf8", "empty", "single-quotes", "bad-utf8-in-string"])
def test_not_json(registry, payload):
    with pytest.raises(DecodeError, match="not valid UTF-8 JSON") as ei:
        decode_json(registry, payload)
    assert_no_leak(ei.value)


def test_huge_integer_literal_is_a_decode_error(registry):
    payload = b'{"schema": "order_placed", "total_cents": ' + b"7" * 5000 + b"}"
    with pytest.raises(DecodeError) as ei:  # int() refuses > 4300 digits
        decode_json(registry, payload)
    assert "7777" not in str(ei.value)


@pytest.mark.parametrize("depth", [5_000, 100_000])
def test_deep_nesting_is_a_decode_error(registry, depth):
    payload = b'{"schema":"customer_signup","email":' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(DecodeError, match="nested too deeply"):
        decode_json(registry, payload)
    obj_payload = b'{"a":' * depth + b"1" + b"}" * depth
    with pytest.raises(DecodeError):
        decode_json(registry, obj_payload)


def test_moderate_nesting_in_a_field_is_a_violation(registry):
    event = samples.signup("acme", "u1", email=json.loads("[" * 200 + "]" * 200))
    exc = violation(registry, event)
    assert exc.field == "email"


@pytest.mark.parametrize("schema_value", [None, "", 5, ["customer_signup"], {"name": "customer_signup"}])
def test_missing_or_bad_schema_member(registry, schema_value):
    event = samples.signup("acme", "u1", email=CANARY)
    if schema_value is None:
        del event["schema"]
    else:
        event["schema"] = schema_value
    with pytest.raises(UnknownSchemaError, match="no 'schema' member") as ei:
        decode_json(registry, enc(event))
    assert_no_leak(ei.value)


def test_unknown_schema_name(registry):
    with pytest.raises(UnknownSchemaError) as ei:
        decode_json(registry, enc(samples.signup("acme", "u1", schema="account_closed")))
    assert "account_closed" not in str(ei.value)  # a name the producer chose: never repeated


def test_unknown_schema_name_with_pii_is_not_echoed(registry):
    with pytest.raises(UnknownSchemaError) as ei:
        decode_json(registry, enc(samples.signup("acme", "u1", schema=CANARY)))
    assert "names no schema" in str(ei.value)
    assert_no_leak(ei.value)


def test_whitespace_before_object_is_fine(registry):
    entry, _ = decode_json(registry, b"  \n\t" + enc(samples.support("acme", "u1")))
    assert entry.event_type == "support_message"
