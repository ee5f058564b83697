"""DataApi's decisions without I/O: authentication, authorization, validation, paging, error shapes.

The collaborators (store, key store, detokenizer, audit) are small in-memory
stand-ins with the same methods; the real ones are exercised in
tests/integration/test_api_data_api.py and tests/e2e/test_api_http.py.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.api.api_keys import Principal, Role, key_id_of, parse_token
from streams.api.limits import ApiLimiter
from streams.api.auth import credentials
from streams.api.params import EVENT_ID, LIMIT, SUBJECT, TENANT, parse_detokenize_body
from streams.api.responses import ApiError
from streams.api.routes import ROUTES, unmatched
from streams.api.service import DataApi
from streams.audit.exceptions import AuditError
from streams.privacy.detokenize import DetokenizeRefused
from streams.tenancy.names import is_valid_tenant_name

SECRET = "A" * 43
TOKENS = {
    "acme-reader": (f"stk_{'a' * 12}_{SECRET}", Principal("a" * 12, "acme", Role.READER)),
    "acme-detok": (f"stk_{'b' * 12}_{SECRET}", Principal("b" * 12, "acme", Role.DETOKENIZER)),
    "globex-reader": (f"stk_{'c' * 12}_{SECRET}", Principal("c" * 12, "globex", Role.READER)),
    "operator": (f"stk_{'d' * 12}_{SECRET}", Principal("d" * 12, None, Role.OPERATOR)),
    "offboarded": (f"stk_{'e' * 12}_{SECRET}", Principal("e" * 12, "initech", Role.READER)),
}
UNKNOWN = f"stk_{'f' * 12}_{SECRET}"
EID = "1b4e28ba-2fa1-41d2-883f-0016d3cca427"


def _doc(i: int, subject: str = "u-1") -> dict[str, Any]:
    return {"event_id": f"00000000-0000-4000-8000-{i:012d}", "event_type": "order_placed", "tenant": "acme",
            "subject": subject, "event_time_ms": 1_700_000_000_000 + i, "schema": "x", "event": {}}


class Store:
    def __init__(self, docs: list[dict[str, Any]], fail: bool = False) -> None:
        self.docs, self.fail, self.calls = docs, fail, []

    def _check(self, *call: Any) -> None:
        self.calls.append(call)
        if self.fail:
            raise redis.ConnectionError("down")

    def get(self, tenant: str, event_id: str) -> dict[str, Any] | None:
        self._check("get", tenant, event_id)
        return next((d for d in self.docs if d["event_id"] == event_id and d["tenant"] == tenant), None)

    def by_subject(self, tenant: str, subject: str, limit: int, offset: int) -> list[dict[str, Any]]:
        self._check("by_subject", tenant, subject, limit, offset)
        return [d for d in self.docs if d["subject"] == subject][offset:offset + limit]

    def by_type(self, tenant, event_type, start_ms, end_ms, limit, offset):
        self._check("by_type", tenant, event_type, start_ms, end_ms, limit, offset)
        return [d for d in self.docs if d["event_type"] == event_type][offset:offset + limit]

    def by_time(self, tenant, start_ms, end_ms, limit, offset):
        self._check("by_time", tenant, start_ms, end_ms, limit, offset)
        return self.docs[offset:offset + limit]

    def count(self, tenant: str, event_type: str | None = None) -> int:
        self._check("count", tenant, event_type)
        return len(self.docs)


class Keys:
    def authenticate(self, token: str) -> Principal | None:
        return next((p for t, p in TOKENS.values() if t == token), None)


class Audit:
    def __init__(self, fail: bool = False) -> None:
        self.records: list[dict[str, Any]] = []
        self.fail = fail
        self.api: DataApi | None = None

    def flushed(self) -> list[dict[str, Any]]:
        """The records once the API flushed its aggregated denials (the worker does it every window)."""
        if self.api is not None:
            self.api.flush_denials()
        return self.records

    def append(self, action, tenant, subject_pseudonym, reason, details=None, *, actor=None):
        if self.fail:
            raise AuditError("down")
        rec = {"action": action, "tenant": tenant, "subject": subject_pseudonym, "reason": reason,
               "details": dict(details or {}), "actor": actor}
        self.records.append(rec)
        return rec


class Detok:
    def __init__(self, outcome: Any = "ada@example.com") -> None:
        self.outcome, self.calls = outcome, []

    def detokenize(self, tenant, subject, token, actor, reason):
        self.calls.append((tenant, subject, token, actor, reason))
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


def _api(store: Store | None = None, audit: Audit | None = None, detok: Detok | None = None,
         limits: ApiLimiter | None = None) -> DataApi:
    audit = audit or Audit()
    audit.api = DataApi(store or Store([_doc(i) for i in range(5)]), Keys(), detok or Detok(),  # type: ignore[arg-type]
                        audit, lambda t, s: "p_" + "0" * 24, lambda: {"acme", "globex"}, limits=limits)
    return audit.api


def _get(api: DataApi, route: str, who: str | None = "acme-reader", query: Any = None, **params: str):
    headers = {"Authorization": f"Bearer {TOKENS[who][0]}"} if who else {}
    return api.handle("GET", route, {"tenant": "acme", **params}, query or {}, headers, b"")


def _detok_body(**over: Any) -> bytes:
    return json.dumps({"subject": "u-1", "token": "tok.email.xxxxxxxxxxxxxxxxxxxxxxxx", "reason": "ticket T-1",
                       **over}).encode()


# ---------------------------------------------------------------- authentication


def test_no_key_is_401_with_www_authenticate_and_audited_by_network_only():
    audit = Audit()
    api = _api(audit=audit)
    for _ in range(3):
        r = api.handle("GET", "counts", {"tenant": "acme"}, {}, {}, b"", client="203.0.113.77")
        assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
        assert r.body["error"]["code"] == "unauthorized"
    assert audit.records == []  # nothing on the request path
    [rec] = audit.flushed()  # one aggregated record: who (the network, never the address), what, how many
    assert rec["action"] == "api.denied" and rec["actor"] == "api" and rec["tenant"] == "acme"
    assert rec["details"] | {"window_start_ms": 0, "window_end_ms": 0} == {
        "status": 401, "route": "counts", "key_id": None, "key_role": None, "key_tenant": None, "count": 3,
        "network": "203.0.113.0/24", "window_start_ms": 0, "window_end_ms": 0}
    assert "203.0.113.77" not in json.dumps(rec)


@pytest.mark.parametrize("header", [{"Authorization": "Basic abc"}, {"Authorization": "Bearer nope"},
                                    {"X-API-Key": "stk_short_x"}, {"authorization": "Bearer " + "x" * 5000}])
def test_malformed_key_is_401_audited_without_the_token(header):
    audit = Audit()
    r = _api(audit=audit).handle("GET", "counts", {"tenant": "acme"}, {}, header, b"")
    assert r.status == 401 and "WWW-Authenticate" in r.headers
    [rec] = audit.flushed()
    assert rec["details"]["key_id"] is None and rec["reason"] in ("no API key", "malformed API key")
    assert list(header.values())[0].split(" ")[-1] not in json.dumps(rec)


def test_unknown_key_is_401_and_audited_with_key_id_never_token():
    audit = Audit()
    r = _api(audit=audit).handle("GET", "counts", {"tenant": "acme"}, {}, {"x-api-key": UNKNOWN}, b"")
    assert r.status == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    [rec] = audit.flushed()
    assert rec["action"] == "api.denied" and rec["details"]["key_id"] == "f" * 12 and rec["details"]["status"] == 401
    assert rec["tenant"] == "acme" and rec["actor"] == "api:" + "f" * 12
    assert SECRET not in json.dumps(rec)


def test_denials_are_aggregated_one_record_per_who_and_what():
    audit = Audit()
    api = _api(audit=audit)
    for _ in range(57):
        assert api.handle("GET", "counts", {"tenant": "acme"}, {}, {"X-API-Key": UNKNOWN}, b"").status == 401
    for _ in range(3):
        _get(api, "counts", who="globex-reader")
    assert audit.records == []
    recs = audit.flushed()
    assert sorted((r["details"]["key_id"], r["details"]["status"], r["details"]["count"]) for r in recs) == [
        ("c" * 12, 403, 3), ("f" * 12, 401, 57)]
    assert audit.flushed() == recs  # nothing new: nothing added


def test_x_api_key_and_bearer_case_insensitive():
    api = _api()
    for headers in ({"X-API-KEY": TOKENS["acme-reader"][0]}, {"AUTHORIZATION": "bearer " + TOKENS["acme-reader"][0]}):
        assert api.handle("GET", "counts", {"tenant": "acme"}, {}, headers, b"").status == 200


def test_credentials_parsing():
    assert credentials({"Authorization": "Bearer  abc "}) == "abc"
    assert credentials({"Authorization": "Basic abc", "X-API-Key": "k"}) == "k"
    assert credentials({"Authorization": "Bearer"}) is None
    assert credentials({}) is None


def test_token_syntax():
    assert parse_token(TOKENS["acme-reader"][0]) == ("a" * 12, SECRET)
    assert key_id_of(UNKNOWN) == "f" * 12
    for bad in ["", "stk_", f"stk_{'A' * 12}_{SECRET}", f"stk_{'a' * 12}_{SECRET}x", f"stk_{'a' * 12}_{SECRET}\n",
                f"xtk_{'a' * 12}_{SECRET}", f"stk_{'a' * 12}_{'*' * 43}"]:
        assert parse_token(bad) is None, bad


# ---------------------------------------------------------------- authorization


def test_other_tenant_is_403_with_identical_body_whether_it_exists_or_not():
    audit = Audit()
    api = _api(audit=audit)
    h = {"Authorization": f"Bearer {TOKENS['acme-reader'][0]}"}
    existing = api.handle("GET", "events", {"tenant": "globex"}, {}, h, b"")
    missing = api.handle("GET", "events", {"tenant": "nosuch"}, {}, h, b"")
    # Even with parameters that would be invalid: authorization comes first, nothing else is revealed.
    bad_params = api.handle("GET", "event", {"tenant": "nosuch", "event_id": "x"}, {"limit": "0"}, h, b"")
    assert existing.status == missing.status == bad_params.status == 403
    assert existing.body == missing.body == bad_params.body
    recs = audit.flushed()
    assert sorted((r["tenant"], r["details"]["route"], r["details"]["count"]) for r in recs) == [
        ("globex", "events", 1), ("nosuch", "event", 1), ("nosuch", "events", 1)]
    assert all(r["details"]["key_tenant"] == "acme" and r["subject"] is None for r in recs)


def test_key_of_a_tenant_no_longer_onboarded_is_403_like_any_other():
    api = _api()
    r = api.handle("GET", "counts", {"tenant": "initech"}, {}, {"X-API-Key": TOKENS["offboarded"][0]}, b"")
    other = _get(api, "counts", who="globex-reader")
    assert r.status == other.status == 403 and r.body == other.body


def test_operator_key_may_not_read_tenant_data():
    audit = Audit()
    r = _get(_api(audit=audit), "events", who="operator")
    assert r.status == 403 and audit.flushed()[0]["details"]["key_role"] == "operator"


def test_reader_may_not_detokenize_and_the_denial_names_the_subject_by_pseudonym_only():
    audit, detok = Audit(), Detok()
    api = _api(audit=audit, detok=detok)
    r = api.handle("POST", "detokenize", {"tenant": "acme"}, {},
                   {"Authorization": f"Bearer {TOKENS['acme-reader'][0]}"}, _detok_body())
    assert r.status == 403 and detok.calls == []
    [rec] = audit.flushed()
    assert rec["subject"] == "p_" + "0" * 24 and "u-1" not in json.dumps(rec)


def test_audit_failure_does_not_turn_a_denial_into_anything_else():
    r = _get(_api(audit=Audit(fail=True)), "counts", who="globex-reader")
    assert r.status == 403


# ---------------------------------------------------------------- routes and validation


def test_unknown_route_and_method():
    api = _api()
    assert api.handle("GET", "nope", {}, {}, {}, b"").status == 404
    r = api.handle("POST", "events", {"tenant": "acme"}, {}, {}, b"")
    assert r.status == 405 and r.headers["Allow"] == "GET, HEAD"
    assert unmatched("POST", "/v1/tenants/acme/events").status == 405
    assert unmatched("GET", "/v1/tenants/acme/detokenize").headers["Allow"] == "POST"
    assert unmatched("GET", "/v1/tenants/acme/nothing").status == 404
    assert unmatched("GET", "/v1/tenants/acme/events/x/y").body["error"]["code"] == "not_found"


def test_head_is_get():
    r = _api().handle("HEAD", "counts", {"tenant": "acme"}, {}, {"X-API-Key": TOKENS["acme-reader"][0]}, b"")
    assert r.status == 200


@pytest.mark.parametrize("limit", ["0", "1001", "99999999999999999999", "-1", "1.5", "abc", "", " 5", "1_0", "١٢"])
def test_bad_limit_is_400_naming_the_parameter(limit):
    r = _get(_api(), "events", query={"limit": limit})
    assert r.status == 400 and r.body["error"]["code"] == "invalid_parameter"
    assert "'limit'" in r.body["error"]["message"] and "1 to 1000" in r.body["error"]["message"]


@pytest.mark.parametrize("query", [{"offset": "-1"}, {"offset": "1000000001"}, {"start": "x"}, {"end": "1e3"},
                                   {"start": "5", "end": "4"}, {"type": "Order"}, {"type": "*"},
                                   {"type": "a" * 65}, {"limt": "5"}, {"type": "order_placed\n"}])
def test_bad_query_is_400(query):
    r = _get(_api(), "events", query=query)
    assert r.status == 400, (query, r)
    for v in query.values():  # the value sent is never echoed
        assert len(v) < 2 or v not in r.body["error"]["message"]


def test_repeated_query_parameter_is_400():
    r = _get(_api(), "events", query=[("limit", "5"), ("limit", "6")])
    assert r.status == 400 and "more than once" in r.body["error"]["message"]


INJECTIONS = ["*", "..", ".", "a*", "a?", "[a]", "{acme}", "a}b", "a\nb", "a\rb", "a\x00", "a b", "a/b", "%2A",
              "t:{acme}:*", "x" * 129, "x" * 100_000, "ü", "a\\b", "'; DROP", "${jndi:x}"]


@pytest.mark.parametrize("value", INJECTIONS)
def test_injection_in_path_values_never_reaches_the_store(value):
    store = Store([_doc(1)])
    api = _api(store=store)
    assert _get(api, "subject_events", subject=value).status == 400
    assert _get(api, "event", event_id=value).status == 400
    assert _get(api, "events", query={"type": value}).status == 400
    h = {"X-API-Key": TOKENS["acme-reader"][0]}
    assert api.handle("GET", "counts", {"tenant": value}, {}, h, b"").status in (400, 403)
    assert store.calls == []


def test_paging_has_next_offset_until_the_last_page():
    store = Store([_doc(i) for i in range(5)])
    api = _api(store=store)
    first = _get(api, "subject_events", subject="u-1", query={"limit": "2"})
    assert first.status == 200 and len(first.body["events"]) == 2
    assert first.body["paging"] == {"limit": 2, "offset": 0, "returned": 2, "next_offset": 2}
    last = _get(api, "subject_events", subject="u-1", query={"limit": "2", "offset": "4"})
    assert last.body["paging"]["next_offset"] is None and last.body["paging"]["returned"] == 1
    assert store.calls[0] == ("by_subject", "acme", "u-1", 3, 0)  # one more than asked: is there a next page?


def test_events_by_type_or_time_and_counts_and_one_event():
    store = Store([_doc(i) for i in range(3)])
    api = _api(store=store)
    r = _get(api, "events", query={"type": "order_placed", "start": "1", "end": "2"})
    assert r.status == 200 and r.body["filter"] == {"type": "order_placed", "start": 1, "end": 2}
    assert store.calls[-1] == ("by_type", "acme", "order_placed", 1, 2, 101, 0)
    _get(api, "events")
    assert store.calls[-1] == ("by_time", "acme", None, None, 101, 0)
    assert _get(api, "counts", query={"type": "order_placed"}).body == {"tenant": "acme", "type": "order_placed",
                                                                        "count": 3}
    doc = _doc(2)
    r = _get(api, "event", event_id=doc["event_id"].upper())  # any case; stored ids are lowercase
    assert r.status == 200 and r.body["event"] == doc
    r = _get(api, "event", event_id=EID)
    assert r.status == 404 and r.body["error"]["code"] == "not_found"
    assert r.headers["Cache-Control"] == "no-store"


def test_store_down_is_503():
    r = _get(_api(store=Store([], fail=True)), "counts")
    assert r.status == 503 and r.body["error"]["code"] == "unavailable"


# ---------------------------------------------------------------- detokenize


def _post(api: DataApi, body: bytes, who: str = "acme-detok"):
    return api.handle("POST", "detokenize", {"tenant": "acme"}, {},
                      {"Authorization": f"Bearer {TOKENS[who][0]}"}, body)


def test_detokenize_ok_with_the_key_as_actor():
    detok = Detok()
    r = _post(_api(detok=detok), _detok_body())
    assert r.status == 200 and r.body["value"] == "ada@example.com"
    assert detok.calls == [("acme", "u-1", "tok.email.xxxxxxxxxxxxxxxxxxxxxxxx", "api:" + "b" * 12, "ticket T-1")]


def test_detokenize_refused_is_422_and_audit_down_is_503():
    r = _post(_api(detok=Detok(DetokenizeRefused("no key for this subject"))), _detok_body())
    assert r.status == 422 and r.body["error"]["code"] == "detokenize_refused"
    r = _post(_api(detok=Detok(AuditError("down"))), _detok_body())
    assert r.status == 503 and "nothing was revealed" in r.body["error"]["message"]


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b"{}", _detok_body(extra=1), _detok_body(subject=5),
                                  _detok_body(subject="*"), _detok_body(subject=".."), _detok_body(token=""),
                                  _detok_body(token="t" * 5000), _detok_body(reason=""), _detok_body(reason="  ab "),
                                  _detok_body(reason="a\nbcdef"), _detok_body(reason="r" * 201), b"\xff\xfe"])
def test_detokenize_bad_body_is_400(body):
    detok = Detok()
    r = _post(_api(detok=detok), body)
    assert r.status == 400 and r.body["error"]["code"] == "invalid_body" and detok.calls == []
    assert b"tok.email" not in json.dumps(r.body).encode()


def test_detokenize_body_too_large_is_413():
    with pytest.raises(ApiError) as exc:
        parse_detokenize_body(b" " * 20_000)
    assert exc.value.response.status == 413


def test_unexpected_failure_is_500_without_details():
    class Broken(Detok):
        def detokenize(self, *a):
            raise RuntimeError("secret value ada@example.com")

    r = _post(_api(detok=Broken()), _detok_body())
    assert r.status == 500 and "ada" not in json.dumps(r.body)


# ---------------------------------------------------------------- the rules themselves


@settings(max_examples=300, deadline=None)  # a deadline would time the machine, not the rule
@given(st.text(alphabet="abcxyz019-_A.{}*\n", max_size=70))
def test_tenant_pattern_is_the_tenancy_rule(name):
    assert bool(re.fullmatch(TENANT.pattern, name)) == is_valid_tenant_name(name)


@settings(max_examples=300, deadline=None)  # a deadline would time the machine, not the rule
@given(st.text(alphabet="aZ09._:-*/{ \n", max_size=140))
def test_subject_rule_is_the_ingest_rule_without_dot_only_ids(s):
    ingest_ok = bool(re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", s))
    try:
        SUBJECT.parse(s)
        accepted = True
    except ApiError:
        accepted = False
    assert accepted == (ingest_ok and set(s) != {"."})


def test_event_id_and_limit_rules():
    assert EVENT_ID.parse(EID) == EID
    assert LIMIT.parse("1000") == 1000 and LIMIT.default == 100
    with pytest.raises(ApiError):
        EVENT_ID.parse("{" + EID[1:-1] + "}")


def test_every_route_is_under_v1_and_names_its_path_params():
    for r in ROUTES:
        # Tenant data under a tenant's path; the control routes (operator keys only) on /v1/tenants itself.
        if r.control:
            assert r.template.startswith("/v1/tenants") and r.roles == {Role.OPERATOR}
        else:
            assert r.template.startswith("/v1/tenants/{tenant}/") and Role.OPERATOR not in r.roles
        assert set(re.findall(r"{(\w+)}", r.template)) == {p.name for p in r.path_params}
    assert len({(r.method, r.template) for r in ROUTES}) == len(ROUTES)


# ---------------------------------------------------------------- no caller text in API errors (issue 16)

CANARY = "Grace_Hopper_1906@example.com"
_CANARY_REQUESTS = [
    # (method, route, who, path params, query, body)
    ("GET", "subject_events", "acme-reader", {"subject": CANARY}, {}, b""),
    ("GET", "subject_events", "acme-reader", {"subject": "u-1"}, {CANARY: "1"}, b""),
    ("GET", "subject_events", "acme-reader", {"subject": "u-1"}, {"limit": CANARY}, b""),
    ("GET", "events", "acme-reader", {}, {"type": CANARY, "since": CANARY}, b""),
    ("GET", "events", "acme-reader", {}, [("type", CANARY), ("type", CANARY)], b""),
    ("GET", "event", "acme-reader", {"event_id": CANARY}, {}, b""),
    ("GET", "counts", "acme-reader", {}, {"type": CANARY}, b""),
    ("GET", "counts", "acme-reader", {"tenant": CANARY}, {}, b""),
    ("POST", "detokenize", "acme-detok", {}, {}, json.dumps({"subject": CANARY, "token": "t", "reason": "r"}).encode()),
    ("POST", "detokenize", "acme-detok", {}, {}, json.dumps({CANARY: 1, "subject": "u-1"}).encode()),
    ("POST", "detokenize", "acme-detok", {}, {}, json.dumps({"subject": "u-1", "token": CANARY * 40,
                                                              "reason": CANARY}).encode()),
    ("POST", "detokenize", "acme-detok", {}, {}, CANARY.encode()),
    ("POST", "privacy_request", "acme-reader", {}, {}, json.dumps({"type": CANARY, "subject": CANARY}).encode()),
]


@pytest.mark.parametrize("method,route,who,params,query,body", _CANARY_REQUESTS)
def test_api_errors_echo_no_text_the_caller_chose(method, route, who, params, query, body):
    """API answers name only what the API defines (parameter names, rules, codes): a value or a member
    name the caller sent is never echoed, on any route, valid or refused."""
    request = json.dumps([params, list(dict(query).items()) if isinstance(query, dict) else query, body.decode()])
    assert CANARY in request  # the search below finds the canary where it is
    headers = {"Authorization": f"Bearer {TOKENS[who][0]}"}
    r = _api().handle(method, route, {"tenant": "acme", **params}, query, headers, body)
    assert r.status < 500
    assert CANARY not in json.dumps(r.body) and "Grace_Hopper" not in json.dumps(r.body), (r.status, r.body)
    assert all(CANARY not in v for v in r.headers.values())
