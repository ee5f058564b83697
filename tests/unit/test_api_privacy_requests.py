"""The privacy role's routes and /metrics' authorization, decided by DataApi without I/O.

A tenant's privacy key files its own subjects' requests (audited before they are
published) and reads their receipts; reader, detokenizer, operator and other
tenants' keys cannot, and nothing is published for them. ``authorize_metrics``
lets operator keys only through. The real filing over HTTP is in
tests/security/test_api_attacks.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from streams.api.api_keys import Principal, Role
from streams.api.params import parse_privacy_body
from streams.api.responses import ApiError
from streams.api.service import DataApi
from streams.consent.requests import PrivacyRequest
from tests.unit.test_api_service import SECRET, TOKENS, UNKNOWN, Audit, Detok, Store

PRIVACY = (f"stk_{'9' * 12}_{SECRET}", Principal("9" * 12, "acme", Role.PRIVACY))
GLOBEX_PRIVACY = (f"stk_{'8' * 12}_{SECRET}", Principal("8" * 12, "globex", Role.PRIVACY))
ALL = {**TOKENS, "acme-privacy": PRIVACY, "globex-privacy": GLOBEX_PRIVACY}
RID = "r-" + "0" * 32


class Keys:
    def authenticate(self, token: str) -> Principal | None:
        return next((p for t, p in ALL.values() if t == token), None)


class Filer:
    def __init__(self, fail: bool = False) -> None:
        self.filed: list[PrivacyRequest] = []
        self.fail = fail

    def file(self, request: PrivacyRequest) -> None:
        if self.fail:
            raise RuntimeError("broker down")
        self.filed.append(request)


def _api(audit: Audit | None = None, filer: Filer | None = None, receipts: dict | None = None) -> DataApi:
    rec = receipts or {}
    audit = audit or Audit()
    audit.api = DataApi(Store([]), Keys(), Detok(), audit,  # type: ignore[arg-type]
                        lambda t, s: f"p_{t}_{s}", lambda: {"acme", "globex"},
                        filer=filer if filer is not None else Filer(),
                        receipts=lambda t, r: rec.get((t, r)))
    return audit.api


def _file(api: DataApi, who: str | None, body: Any, tenant: str = "acme"):
    headers = {"Authorization": f"Bearer {ALL[who][0]}"} if who else {}
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return api.handle("POST", "privacy_request", {"tenant": tenant}, {}, headers, raw)


def test_a_privacy_key_files_for_its_own_tenant_audited_before_it_is_published():
    audit, filer = Audit(), Filer()
    resp = _file(_api(audit, filer), "acme-privacy", {"type": "erase", "subject": "u-1", "reason": "ticket 7"})
    assert resp.status == 202, resp.body
    (req,) = filer.filed
    assert (req.type.value, req.tenant, req.subject, req.actor, req.reason) == ("erase", "acme", "u-1",
                                                                                 "api:" + "9" * 12, "ticket 7")
    assert resp.body["request_id"] == req.request_id and resp.body["filed_by"] == "api:" + "9" * 12
    assert resp.headers["Location"] == f"/v1/tenants/acme/privacy-requests/{req.request_id}"
    (rec,) = audit.records
    assert rec["action"] == "privacy.request_filed" and rec["tenant"] == "acme"
    assert rec["subject"] == "p_acme_u-1" and rec["actor"] == "api:" + "9" * 12  # a pseudonym, never the id
    assert rec["details"]["request_id"] == req.request_id and "u-1" not in json.dumps(rec["details"])


@pytest.mark.parametrize("kind", ["opt_out", "opt_in", "erase", "erase_and_suppress"])
def test_every_request_type_without_purpose(kind):
    filer = Filer()
    assert _file(_api(filer=filer), "acme-privacy", {"type": kind, "subject": "u-1"}).status == 202
    assert filer.filed[0].type.value == kind


@pytest.mark.parametrize("who,tenant", [
    ("acme-reader", "acme"), ("acme-detok", "acme"), ("operator", "acme"), ("globex-privacy", "acme"),
    ("globex-reader", "acme"), ("acme-privacy", "globex"), ("acme-privacy", "initech"),
])
def test_other_keys_cannot_file_and_nothing_is_published(who, tenant):
    audit, filer = Audit(), Filer()
    resp = _file(_api(audit, filer), who, {"type": "erase", "subject": "u-1"}, tenant)
    assert resp.status == 403 and resp.body["error"]["code"] == "forbidden"
    assert filer.filed == []
    assert [r["action"] for r in audit.flushed()] == ["api.denied"]


def test_another_tenants_key_gets_the_same_answer_whether_the_tenant_exists_or_not():
    a = _file(_api(), "globex-privacy", {"type": "erase", "subject": "u-1"}, "acme")
    b = _file(_api(), "globex-privacy", {"type": "erase", "subject": "u-1"}, "no-such-tenant")
    assert (a.status, a.body) == (b.status, b.body)


def test_no_key_or_an_unknown_key_is_401_and_nothing_is_published():
    filer = Filer()
    api = _api(filer=filer)
    assert _file(api, None, {"type": "erase", "subject": "u-1"}).status == 401
    resp = api.handle("POST", "privacy_request", {"tenant": "acme"}, {}, {"X-API-Key": UNKNOWN},
                      b'{"type": "erase", "subject": "u-1"}')
    assert resp.status == 401 and filer.filed == []


@pytest.mark.parametrize("body", [
    b"", b"[]", b"{", {"subject": "u-1"}, {"type": "erase"}, {"type": "delete_all", "subject": "u-1"},
    {"type": "erase", "subject": "u*"}, {"type": "erase", "subject": ".."}, {"type": "erase", "subject": "x" * 129},
    {"type": "erase", "subject": "u-1", "tenant": "globex"}, {"type": "erase", "subject": "u-1", "reason": "a\nb"},
    {"type": "erase", "subject": "u-1", "reason": "r" * 201}, {"type": "grant", "subject": "u-1"},
    {"type": "erase", "subject": "u-1", "purpose": "analytics"}, {"type": "grant", "subject": "u-1", "purpose": "x"},
    {"type": 1, "subject": "u-1"}, {"type": "erase", "subject": ["u-1"]},
])
def test_bad_bodies_are_400_and_nothing_is_audited_or_published(body):
    audit, filer = Audit(), Filer()
    resp = _file(_api(audit, filer), "acme-privacy", body)
    assert resp.status == 400 and resp.body["error"]["code"] == "invalid_body", resp.body
    assert filer.filed == [] and audit.flushed() == []
    assert "u*" not in resp.body["error"]["message"] and "globex" not in resp.body["error"]["message"]


def test_grant_needs_a_purpose():
    filer = Filer()
    assert _file(_api(filer=filer), "acme-privacy",
                 {"type": "grant", "subject": "u-1", "purpose": "marketing"}).status == 202
    assert filer.filed[0].purpose == "marketing"


def test_too_large_body_is_413():
    resp = _file(_api(), "acme-privacy", b"{" + b" " * 20000 + b"}")
    assert resp.status == 413


def test_audit_down_nothing_is_filed():
    filer = Filer()
    resp = _file(_api(Audit(fail=True), filer), "acme-privacy", {"type": "erase", "subject": "u-1"})
    assert resp.status == 503 and filer.filed == []


def test_broker_down_is_503_not_filed_and_the_failure_is_audited():
    audit = Audit()
    resp = _file(_api(audit, Filer(fail=True)), "acme-privacy", {"type": "opt_out", "subject": "u-1"})
    assert resp.status == 503 and "not filed" in resp.body["error"]["message"]
    assert [r["action"] for r in audit.records] == ["privacy.request_filed", "privacy.request_not_filed"]


def test_receipts_for_the_privacy_key_of_the_tenant_only():
    api = _api(receipts={("acme", RID): {"request_id": RID, "status": "done"}})

    def get(who: str, tenant: str = "acme", rid: str = RID):
        return api.handle("GET", "privacy_request_status", {"tenant": tenant, "request_id": rid}, {},
                          {"Authorization": f"Bearer {ALL[who][0]}"})

    resp = get("acme-privacy")
    assert resp.status == 200 and resp.body["receipt"]["status"] == "done"
    assert get("acme-privacy", rid="r-" + "1" * 32).status == 404
    assert get("acme-privacy", rid="r-XYZ").status == 400
    for who in ("acme-reader", "acme-detok", "operator", "globex-privacy"):
        assert get(who).status == 403, who


def test_a_privacy_key_reads_no_tenant_data():
    api = _api()
    headers = {"Authorization": f"Bearer {PRIVACY[0]}"}
    for route, params in [("events", {}), ("counts", {}), ("subject_events", {"subject": "u-1"})]:
        assert api.handle("GET", route, {"tenant": "acme", **params}, {}, headers).status == 403, route
    body = json.dumps({"subject": "u-1", "token": "tok.email.x", "reason": "why not"}).encode()
    assert api.handle("POST", "detokenize", {"tenant": "acme"}, {}, headers, body).status == 403


def test_parse_privacy_body_strips_the_reason():
    assert parse_privacy_body(b'{"type": "opt_in", "subject": "u-1", "reason": " t-1 "}') == {
        "type": "opt_in", "subject": "u-1", "purpose": None, "reason": "t-1"}
    with pytest.raises(ApiError):
        parse_privacy_body(b'{"type": "opt_in", "subject": "u-1", "extra": 1}')


# ---------------------------------------------------------------- /metrics

def test_metrics_for_operator_keys_only_denials_audited():
    audit = Audit()
    api = _api(audit)
    assert api.authorize_metrics({"Authorization": f"Bearer {TOKENS['operator'][0]}"}) is None
    assert api.authorize_metrics({}).status == 401
    assert api.authorize_metrics({"Authorization": "Bearer nonsense"}).status == 401
    for who in ("acme-reader", "acme-detok", "acme-privacy"):
        resp = api.authorize_metrics({"X-API-Key": ALL[who][0]})
        assert resp is not None and resp.status == 403, who
    keyed = [r for r in audit.flushed() if r["details"]["key_id"]]
    assert [(r["details"]["route"], r["details"]["status"]) for r in keyed] == [("metrics", 403)] * 3
    assert api.authorize_metrics({"X-API-Key": UNKNOWN}).status == 401
    assert audit.flushed()[-1]["details"]["status"] == 401


def test_metrics_authorization_with_the_store_down_is_503():
    class Down:
        def authenticate(self, token: str) -> Any:
            import redis
            raise redis.ConnectionError("down")

    api = DataApi(Store([]), Down(), Detok(), Audit(), lambda t, s: "p", lambda: set())  # type: ignore[arg-type]
    resp = api.authorize_metrics({"X-API-Key": TOKENS["operator"][0]})
    assert resp is not None and resp.status == 503



def test_a_request_is_still_filed_when_the_tenants_pseudonym_secret_is_damaged():
    """An erasure must never be refused for a fault of the tenant's records: it is filed (the worker
    parks it until the tenant is repaired) and audited without naming the subject."""
    from streams.privacy.exceptions import TenantKeyDamaged

    def damaged(tenant: str, subject: str) -> str:
        raise TenantKeyDamaged(tenant, "the pseudonym secret is damaged")

    audit, filer = Audit(), Filer()
    audit.api = DataApi(Store([]), Keys(), Detok(), audit, damaged, lambda: {"acme", "globex"},  # type: ignore[arg-type]
                        filer=filer, receipts=lambda t, r: None)
    resp = _file(audit.api, "acme-privacy", {"type": "erase", "subject": "u-1"})
    assert resp.status == 202, resp.body
    (req,) = filer.filed
    (rec,) = audit.records
    assert rec["action"] == "privacy.request_filed" and rec["subject"] is None
    assert rec["details"]["subject_named"].startswith("no:") and "u-1" not in json.dumps(rec)
