"""Tenant quotas without a broker: the operator's syntax, which principal gets which quota key,
the AlterClientQuotas request's bytes, describe's view, and the refusals (before any I/O).

The broker side (a producer over its quota is throttled) is tests/integration/test_quotas.py.
"""

from __future__ import annotations

import io
import struct
from typing import Any

import pytest

from streams.api.control import control_error, parse_create_body
from streams.api.responses import ApiError
from streams.settings import Settings
from streams.tenancy.exceptions import OnboardingError, QuotaUnsupported
from streams.tenancy.onboarding import TenantService
from streams.tenancy.quotas import (
    AlterClientQuotasRequest,
    AlterClientQuotasResponse_v0,
    TenantQuota,
    alter_entries,
    describe_tenant,
    parse_quota,
    quota_from_mapping,
    quota_ops,
    remove_all_ops,
)


def test_parse_full_and_subset() -> None:
    q = parse_quota("produce=1048576,fetch=2097152,request=25")
    assert q.as_dict() == {"produce": 1048576.0, "fetch": 2097152.0, "request": 25.0}
    assert parse_quota(" Produce = 4096 ").as_dict() == {"produce": 4096.0}
    assert parse_quota("request=12.5").as_dict() == {"request": 12.5}
    assert q.text() == "produce=1048576,fetch=2097152,request=25"


def test_parse_removals() -> None:
    assert parse_quota("fetch=none").as_dict() == {"fetch": None}
    assert parse_quota("none").as_dict() == {"produce": None, "fetch": None, "request": None}
    assert parse_quota("produce=2048,request=None").text() == "produce=2048,request=none"


@pytest.mark.parametrize("text", [
    "", "  ", "produce", "produce=", "bytes=100", "produce=abc", "produce=1.5e3.1", "produce=1024.5",
    "produce=100", "produce=-4096", "fetch=inf", "fetch=nan", "request=0", "request=-1", "request=100001",
    "produce=4096,produce=8192", "produce=4096;fetch=4096", "fetch=%d" % (2 ** 41),
])
def test_parse_refuses(text: str) -> None:
    with pytest.raises(OnboardingError):
        parse_quota(text)


def test_mapping_form() -> None:
    assert quota_from_mapping({"produce": 4096, "request": None}).as_dict() == {"produce": 4096.0, "request": None}
    for bad in ({}, {"produce": "4096"}, {"produce": True}, {"bytes": 1}, {"fetch": 10}, {"request": 0}):
        with pytest.raises(OnboardingError):
            quota_from_mapping(bad)


def test_each_part_reaches_its_principal() -> None:
    ops = quota_ops("acme", parse_quota("produce=10240,fetch=20480,request=25"))
    assert ops == {"producer-acme": {"producer_byte_rate": 10240.0, "request_percentage": 25.0},
                   "tenant-acme": {"consumer_byte_rate": 20480.0, "request_percentage": 25.0}}
    # A producer quota never lands on the consumer principal, nor on another tenant's.
    assert quota_ops("acme", parse_quota("produce=4096")) == {"producer-acme": {"producer_byte_rate": 4096.0}}
    assert remove_all_ops("acme") == {"producer-acme": {"producer_byte_rate": None, "request_percentage": None},
                                      "tenant-acme": {"consumer_byte_rate": None, "request_percentage": None}}


def _read_string(buf: io.BytesIO) -> str:
    (n,) = struct.unpack(">h", buf.read(2))
    return buf.read(n).decode()


def test_alter_request_bytes_follow_kafkas_v0_schema() -> None:
    """AlterClientQuotasRequest v0: [entity [type name] ops [key float64 remove]] validate_only."""
    entries = alter_entries({"producer-acme": {"producer_byte_rate": 10240.0, "request_percentage": None}})
    struct_ = AlterClientQuotasRequest(entries).prepare({49: (0, 1)})
    assert (struct_.API_KEY, struct_.API_VERSION) == (49, 0)
    buf = io.BytesIO(struct_.encode())
    assert struct.unpack(">i", buf.read(4)) == (1,)           # one entry
    assert struct.unpack(">i", buf.read(4)) == (1,)           # one entity component
    assert (_read_string(buf), _read_string(buf)) == ("user", "producer-acme")
    assert struct.unpack(">i", buf.read(4)) == (2,)           # two ops, sorted by key
    assert _read_string(buf) == "producer_byte_rate"
    assert struct.unpack(">d?", buf.read(9)) == (10240.0, False)
    assert _read_string(buf) == "request_percentage"
    assert struct.unpack(">d?", buf.read(9)) == (0.0, True)    # removal
    assert buf.read() == b"\x00"                               # validate_only false, nothing after


def test_alter_response_decodes() -> None:
    raw = (struct.pack(">ii", 0, 1) + struct.pack(">hh", 0, -1) + struct.pack(">i", 1)
           + struct.pack(">h", 4) + b"user" + struct.pack(">h", 13) + b"producer-acme")
    resp = AlterClientQuotasResponse_v0.decode(io.BytesIO(raw))
    assert resp.entries == [(0, None, [("user", "producer-acme")])]


class FakeQuotas:
    def __init__(self, held: dict[str, dict[str, float]]) -> None:
        self.held = held
        self.altered: list[Any] = []

    def describe(self, users: list[str]) -> dict[str, dict[str, float]]:
        return {u: dict(self.held.get(u, {})) for u in users}

    def alter(self, ops: Any) -> None:
        self.altered.append(ops)


def test_describe_view_is_the_brokers() -> None:
    fake = FakeQuotas({"producer-acme": {"producer_byte_rate": 10240.0, "request_percentage": 25.0},
                       "tenant-acme": {"consumer_byte_rate": 20480.0, "request_percentage": 25.0}})
    out = describe_tenant(fake, "acme")  # type: ignore[arg-type]
    assert out["quota"] == {"produce": 10240, "fetch": 20480, "request": 25.0}
    assert out["by_principal"]["tenant-acme"] == {"consumer_byte_rate": 20480.0, "request_percentage": 25.0}
    assert describe_tenant(FakeQuotas({}), "acme")["quota"] == {}  # type: ignore[arg-type]


def test_quota_on_a_plaintext_broker_is_refused_before_any_io() -> None:
    fake = FakeQuotas({})
    svc = TenantService(Settings(), None, None, None, None, quotas=fake)  # type: ignore[arg-type]
    with pytest.raises(QuotaUnsupported, match="secure broker") as err:
        svc.create("acme", quota=parse_quota("produce=4096"))
    assert fake.altered == []
    answer = control_error(err.value, lambda: None)
    assert answer is not None and answer.response.status == 400  # a bad request, not a failed step


def test_http_body_quota() -> None:
    body = parse_create_body(b'{"name": "acme", "quota": {"produce": 10240, "request": 25}}')
    assert body["quota"] == TenantQuota((("produce", 10240.0), ("request", 25.0)))
    assert "quota" not in parse_create_body(b'{"name": "acme"}')
    for bad in (b'{"name": "acme", "quota": "produce=1"}', b'{"name": "acme", "quota": {"produce": 5}}',
                b'{"name": "acme", "quota": {"disk": 5}}', b'{"name": "acme", "quota": {}}'):
        with pytest.raises(ApiError) as err:
            parse_create_body(bad)
        assert err.value.response.status == 400
