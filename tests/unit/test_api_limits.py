"""Flood bounds without I/O (issue 9): token buckets, the limiter's decisions, the aggregated denial audit.

A deterministic clock is injected everywhere; DataApi's use of them (admit,
the 429 answer, what is counted) is at the end. The attack over HTTP is
tests/security/test_api_flood.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from streams.api.limits import (
    ApiLimiter,
    BucketMap,
    Denial,
    DenialAudit,
    address_bucket,
    address_for_audit,
    retry_after,
)
from streams.audit.chain import _details_problem
from tests.unit.test_api_service import SECRET, TOKENS, UNKNOWN, Audit, _api


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# ---------------------------------------------------------------- buckets


def test_bucket_burst_then_rate():
    c = Clock()
    b = BucketMap(2.0, clock=c)  # burst: two seconds' worth
    assert b.burst == 4.0
    assert [b.take("k") for _ in range(4)] == [0.0] * 4
    assert b.take("k") == pytest.approx(0.5)  # nothing taken, half a second to the next token
    c.t += 0.5
    assert b.take("k") == 0.0 and b.take("k") == pytest.approx(0.5)
    c.t += 100
    assert [b.take("k") for _ in range(4)] == [0.0] * 4  # refilled to the burst, not beyond
    assert b.take("k") > 0


def test_buckets_are_independent():
    c = Clock()
    b = BucketMap(1.0, clock=c)
    for _ in range(2):
        b.take("flooder")
    assert b.take("flooder") > 0
    assert b.take("other") == 0.0


def test_wait_takes_nothing_and_charges_go_into_bounded_debt():
    c = Clock()
    b = BucketMap(1.0, burst=2, clock=c)
    assert b.wait("k") == 0.0 and b.wait("k") == 0.0
    b.charge("k")
    b.charge("k")
    b.charge("k")  # a third denial admitted at the same time: one token of debt, paid back first
    assert b.wait("k") == pytest.approx(2.0)
    c.t += 2
    assert b.wait("k") == 0.0
    for _ in range(100):
        b.charge("k")
    assert b.wait("k") == pytest.approx(3.0)  # the debt stops at -burst


def test_rate_zero_is_off():
    b = BucketMap(0.0, clock=Clock())
    assert not b.enabled
    assert all(b.take("k") == 0.0 for _ in range(10_000)) and len(b) == 0


def test_bounded_number_of_buckets_least_recently_used_out():
    c = Clock()
    b = BucketMap(1.0, max_buckets=100, clock=c)
    b.take("old")
    b.take("old")  # empty
    for i in range(1000):
        b.take(f"k{i}")
        assert len(b) <= 100
    assert b.wait("old") == 0.0  # evicted: a new, full bucket


def test_idle_buckets_are_dropped_first():
    c = Clock()
    b = BucketMap(1.0, max_buckets=1000, clock=c)
    for i in range(50):
        b.take(f"k{i}")
    c.t += 10  # all full again
    b.take("new")
    assert len(b) == 1


def test_retry_after_is_whole_seconds_at_least_one():
    assert [retry_after(s) for s in (0.0, 0.01, 1.0, 1.2, 7.9)] == ["1", "1", "1", "2", "8"]


# ---------------------------------------------------------------- addresses


def test_address_buckets_and_what_the_audit_keeps():
    assert address_bucket("203.0.113.7") == "203.0.113.7"
    assert address_bucket("2001:db8:1:2:3:4:5:6") == address_bucket("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert address_bucket("::ffff:203.0.113.7") == "203.0.113.7"
    assert address_bucket(None) is None
    assert address_for_audit("203.0.113.7") == "203.0.113.0/24"
    assert address_for_audit("2001:db8:1:2:3:4:5:6") == "2001:db8:1::/48"
    assert address_for_audit("::ffff:203.0.113.7") == "203.0.113.0/24"
    assert address_for_audit("not an address") == "unparseable" and address_for_audit(None) is None


# ---------------------------------------------------------------- the limiter


def _limiter(c: Clock, per_key: float = 10.0, denied: float = 1.0, per_address: float = 1.0) -> ApiLimiter:
    return ApiLimiter(per_key, denied, per_address, clock=c)


def test_per_key_rate_for_every_request_of_the_key_only():
    c = Clock()
    lim = _limiter(c, per_key=5.0)
    assert all(lim.admit("a" * 12, "127.0.0.1") is None for _ in range(10))
    refusal = lim.admit("a" * 12, "127.0.0.1")
    assert refusal is not None and "API key" in refusal.reason and refusal.retry_after_s == pytest.approx(0.2)
    assert lim.admit("b" * 12, "127.0.0.1") is None  # another key: its own bucket


def test_a_key_denied_too_often_is_refused_before_it_reaches_redis():
    c = Clock()
    lim = _limiter(c, denied=1.0)
    lim.authenticated("a" * 12)
    for _ in range(2):
        assert lim.admit("a" * 12, "127.0.0.1") is None
        lim.denied("a" * 12, "127.0.0.1", authenticated=True)
    assert lim.admit(None, "127.0.0.1") is None  # a valid key's 403s do not count against its address
    r = lim.admit("a" * 12, "127.0.0.1")
    assert r is not None and "denied" in r.reason and r.retry_after_s == pytest.approx(1.0)
    c.t += 1
    assert lim.admit("a" * 12, "127.0.0.1") is None


def test_an_address_of_many_denials_refuses_unauthenticated_calls_but_not_authenticated_keys():
    c = Clock()
    lim = _limiter(c, per_address=1.0)
    good = "c" * 12
    lim.authenticated(good)
    for _ in range(2):  # no key, denied
        assert lim.admit(None, "127.0.0.1") is None
        lim.denied(None, "127.0.0.1", authenticated=False)
    assert lim.admit(None, "127.0.0.1") is not None
    assert lim.admit("f" * 12, "127.0.0.1") is not None  # a made-up key id: as good as none
    assert lim.admit(good, "127.0.0.1") is None  # the tenant behind the same address goes on
    assert lim.admit(None, "127.0.0.2") is None  # another address
    c.t += 601  # the hint expires
    for _ in range(2):
        lim.denied(None, "127.0.0.1", authenticated=False)
    assert lim.admit(good, "127.0.0.1") is not None


def test_without_an_address_only_key_limits_apply():
    lim = _limiter(Clock())
    for _ in range(100):
        lim.denied(None, None, authenticated=False)
        assert lim.admit(None, None) is None


# ---------------------------------------------------------------- the denial audit


def _denial(**kw: Any) -> Denial:
    return Denial(**{"route": "events", "status": 403, "reason": "key of another tenant", "tenant": "globex",
                     "key_id": "a" * 12, "key_role": "reader", "key_tenant": "acme", **kw})


def test_one_record_per_group_and_window_with_the_count():
    audit, wall = Audit(), [5_000]
    agg = DenialAudit(audit, 10.0, wall_ms=lambda: wall[0])
    for _ in range(13_000):
        agg.add(_denial())
    agg.add(_denial(status=429, reason="too many requests with this API key"), 400)
    agg.add(_denial(route="counts"))
    assert audit.records == [] and agg.pending() == 13_401
    wall[0] = 15_000
    assert agg.flush() == 3
    by = {(r["details"]["route"], r["details"]["status"]): r for r in audit.records}
    rec = by[("events", 403)]
    assert rec == {"action": "api.denied", "tenant": "globex", "subject": None, "reason": "key of another tenant",
                   "actor": "api:" + "a" * 12,
                   "details": {"status": 403, "route": "events", "key_id": "a" * 12, "key_role": "reader",
                               "key_tenant": "acme", "count": 13_000, "window_start_ms": 5_000,
                               "window_end_ms": 15_000}}
    assert all(_details_problem(r["details"]) is None for r in audit.records)  # what the audit chain accepts
    assert by[("events", 429)]["details"]["count"] == 400 and by[("counts", 403)]["details"]["count"] == 1
    assert agg.flush() == 0 and len(audit.records) == 3  # an empty window writes nothing


def test_groups_are_capped_and_the_rest_is_one_overflow_record():
    audit = Audit()
    agg = DenialAudit(audit, 10.0, max_groups=5)
    for i in range(1000):  # made-up key ids or tenant names: a group each
        agg.add(_denial(key_id=f"{i:012x}", tenant=f"t{i}"))
    assert agg.flush() == 6
    overflow = [r for r in audit.records if r["details"].get("overflow")]
    assert len(overflow) == 1 and overflow[0]["details"]["count"] == 995
    assert sum(r["details"]["count"] for r in audit.records) == 1000


def test_one_unproven_key_id_is_named_many_are_samples():
    audit = Audit()
    agg = DenialAudit(audit, 10.0)
    anon = Denial("counts", 401, "unknown or revoked API key", "acme", network="10.0.0.0/24")
    agg.add(anon, unproven_key_id="e" * 12)
    agg.add(anon, unproven_key_id="e" * 12)
    agg.flush()
    [rec] = audit.records
    assert rec["actor"] == "api:" + "e" * 12 and rec["details"]["key_id"] == "e" * 12 and rec["details"]["count"] == 2
    for i in range(30):
        agg.add(anon, unproven_key_id=f"{i:012x}")
    agg.flush()
    rec = audit.records[-1]
    assert rec["actor"] == "api" and rec["details"]["key_id"] is None and rec["details"]["count"] == 30
    assert len(rec["details"]["key_ids"].split(",")) == 10 and rec["details"]["more_key_ids"] is True
    assert _details_problem(rec["details"]) is None


def test_a_failing_audit_keeps_the_counts_for_the_next_flush():
    audit = Audit(fail=True)
    agg = DenialAudit(audit, 10.0)
    agg.add(_denial(), 7)
    assert agg.flush() == 0 and agg.pending() == 7
    audit.fail = False
    agg.add(_denial(), 2)
    assert agg.flush() == 1 and audit.records[0]["details"]["count"] == 9


def test_the_background_flush_writes_off_the_request_path_and_close_writes_the_rest():
    audit = Audit()
    agg = DenialAudit(audit, 0.05)
    agg.start()
    try:
        agg.add(_denial())
        import time

        deadline = time.monotonic() + 5
        while not audit.records and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(audit.records) == 1
        agg.add(_denial(route="counts"))
    finally:
        agg.close()
    assert len(audit.records) == 2


# ---------------------------------------------------------------- DataApi


def _h(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[who][0]}"}


def test_admit_answers_429_with_retry_after_and_counts_it_for_the_audit():
    c, audit = Clock(), Audit()
    api = _api(audit=audit, limits=ApiLimiter(2.0, 1.0, 1.0, clock=c))
    params = {"tenant": "globex"}
    statuses = []
    for _ in range(20):
        limited = api.admit("events", params, _h("acme-reader"), "127.0.0.1")
        if limited is not None:
            statuses.append(limited.status)
            assert limited.headers["Retry-After"] == "1" and limited.body["error"]["code"] == "rate_limited"
            assert limited.headers["Cache-Control"] == "no-store"
            continue
        statuses.append(api.handle("GET", "events", params, {}, _h("acme-reader"), b"", client="127.0.0.1").status)
    assert statuses[:2] == [403, 403] and set(statuses[2:]) == {429}
    # the other tenant's key, same address, goes on
    assert api.admit("counts", {"tenant": "globex"}, _h("globex-reader"), "127.0.0.1") is None
    recs = audit.flushed()
    assert sorted((r["details"]["status"], r["details"]["count"]) for r in recs) == [(403, 2), (429, 18)]
    assert all(r["tenant"] == "globex" and r["actor"] == "api:" + "a" * 12 for r in recs)
    assert SECRET not in json.dumps(recs)


def test_made_up_keys_from_one_address_are_stopped_by_the_address_bucket():
    c, audit = Clock(), Audit()
    api = _api(audit=audit, limits=ApiLimiter(100.0, 100.0, 1.0, clock=c))
    statuses = []
    for i in range(50):
        h = {"X-API-Key": f"stk_{i:012x}_{SECRET}"}
        limited = api.admit("counts", {"tenant": "acme"}, h, "198.51.100.9")
        statuses.append(limited.status if limited else
                        api.handle("GET", "counts", {"tenant": "acme"}, {}, h, b"", client="198.51.100.9").status)
    assert statuses.count(401) == 2 and statuses.count(429) == 48
    # Made-up key ids make no group of their own: the network is who, a few key ids are samples.
    recs = sorted(audit.flushed(), key=lambda r: r["details"]["status"])
    assert [(r["details"]["status"], r["details"]["count"], r["actor"]) for r in recs] == [
        (401, 2, "api"), (429, 48, "api")]
    assert recs[0]["details"]["key_ids"] == f"{0:012x},{1:012x}" and not recs[0]["details"]["more_key_ids"]
    assert len(recs[1]["details"]["key_ids"].split(",")) == 10 and recs[1]["details"]["more_key_ids"]
    assert all(_details_problem(r["details"]) is None for r in recs)  # what the audit chain accepts
    assert all(r["details"]["network"] == "198.51.100.0/24" for r in recs)
    assert api.admit("counts", {"tenant": "acme"}, _h("acme-reader"), "198.51.100.9") is not None  # not seen yet
    assert api.admit("counts", {"tenant": "acme"}, _h("acme-reader"), "198.51.100.10") is None


def test_without_limits_admit_lets_everything_through():
    api = _api()
    assert all(api.admit("events", {"tenant": "globex"}, {"X-API-Key": UNKNOWN}, "127.0.0.1") is None
               for _ in range(1000))
