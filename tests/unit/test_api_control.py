"""The operator routes' decisions without I/O: who may call them, body and confirmation rules, status codes,
error mapping, the actor given to the tenant service, concurrency.

The tenant service is an in-memory stand-in with TenantService's methods; the real one runs in
tests/integration/test_api_operator.py and tests/e2e/test_api_operator.py.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import redis
from confluent_kafka import KafkaError, KafkaException

from streams.api.control import (
    ActorAudit,
    TenantControl,
    check_confirmation,
    control_error,
    kafka_unreachable,
    parse_create_body,
)
from streams.api.responses import ApiError
from streams.api.routes import ROUTES, unmatched
from streams.api.service import DataApi
from streams.audit.exceptions import AuditError
from streams.ops.exceptions import TopicError
from streams.tenancy.exceptions import InvalidTenantName, OnboardingError, TenantNotFound
from tests.unit.test_api_service import TOKENS, Audit, Detok, Keys, Store

OPERATOR = TOKENS["operator"][0]
OPERATOR_ACTOR = "api:" + "d" * 12
CONTROL_ROUTES = [r for r in ROUTES if r.control]


class Service:
    """TenantService's surface, recording its calls; ``fail`` is raised by every call."""

    def __init__(self, actor: str, world: "World") -> None:
        self.actor, self.world = actor, world

    def _call(self, *call: Any) -> None:
        self.world.calls.append((self.actor, *call))
        if self.world.fail is not None:
            raise self.world.fail
        if self.world.block is not None:
            self.world.started.set()
            self.world.block.wait(10)

    def create(self, name: str, regime: str = "opt_out", roles: Any = ("reader",)) -> dict[str, Any]:
        self._call("create", name, regime, list(roles))
        existed = name in self.world.tenants
        self.world.tenants.add(name)
        creds = {} if existed else {"api_keys": [{"key_id": "k" * 12, "role": r, "token": "stk_x"} for r in roles]}
        return {"tenant": name, "status": "exists" if existed else "created", "regime": regime, "steps": [],
                "credentials": creds}

    def list(self) -> list[dict[str, Any]]:
        self._call("list")
        return [{"tenant": t, "regime": "opt_out", "status": "active", "created_at_ms": 1}
                for t in sorted(self.world.tenants)]

    def describe(self, name: str) -> dict[str, Any]:
        self._call("describe", name)
        if name not in self.world.tenants:
            raise TenantNotFound(f"no tenant {name}")
        return {"tenant": name, "regime": "opt_out", "status": "active"}

    def rotate_credentials(self, name: str) -> dict[str, Any]:
        self._call("rotate", name)
        if name not in self.world.tenants:
            raise TenantNotFound(f"no tenant {name}")
        return {"tenant": name, "rotated_at_ms": 1, "credentials": {}}

    def delete(self, name: str) -> dict[str, Any]:
        self._call("delete", name)
        if name not in self.world.tenants:
            raise TenantNotFound(f"no tenant {name}")
        self.world.tenants.discard(name)
        return {"receipt_id": "r-1", "type": "tenant.delete", "tenant": name, "requested_by": self.actor,
                "status": "done", "steps": []}


class World:
    def __init__(self) -> None:
        self.tenants: set[str] = {"acme"}
        self.calls: list[tuple[Any, ...]] = []
        self.made: list[str] = []
        self.fail: Exception | None = None
        self.status: str | None = None
        self.changes = 0
        self.block: threading.Event | None = None
        self.started = threading.Event()

    def make(self, actor: str) -> Service:
        self.made.append(actor)
        return Service(actor, self)

    def on_change(self) -> None:
        self.changes += 1


def _api(world: World | None = None, audit: Audit | None = None, max_concurrent: int = 2,
         control: bool = True) -> DataApi:
    w = world or World()
    part = TenantControl(w.make, lambda name: w.status, w.on_change, max_concurrent) if control else None
    audit = audit or Audit()
    audit.api = DataApi(Store([]), Keys(), Detok(), audit, lambda t, s: "p_x",  # type: ignore[arg-type]
                        lambda: {"acme", "globex"}, part)
    return audit.api


def _call(api: DataApi, route: str, who: str | None = "operator", tenant: str | None = None, query: Any = None,
          body: Any = b"", method: str | None = None):
    r = next(x for x in ROUTES if x.name == route)
    headers = {"Authorization": f"Bearer {TOKENS[who][0]}"} if who else {}
    params = {"tenant": tenant} if tenant is not None else {}
    raw = json.dumps(body).encode() if not isinstance(body, bytes) else body
    return api.handle(method or r.method, route, params, query or {}, headers, raw)


# ---------------------------------------------------------------- who may call


@pytest.mark.parametrize("who", ["acme-reader", "acme-detok", "globex-reader"])
@pytest.mark.parametrize("route", [r.name for r in CONTROL_ROUTES])
def test_tenant_keys_get_403_audited_and_nothing_runs(who, route):
    world, audit = World(), Audit()
    # Whatever they send, even what would be a valid request for an operator.
    r = _call(_api(world, audit), route, who, tenant="acme", query={"confirm": "acme"}, body={"name": "newco"})
    assert r.status == 403 and r.body["error"] == {"code": "forbidden",
                                                   "message": "only operator keys may manage tenants"}
    assert world.made == [] and world.calls == []
    [rec] = audit.flushed()
    assert rec["action"] == "api.denied" and rec["details"]["route"] == route
    assert rec["details"]["key_role"] == TOKENS[who][1].role.value and rec["details"]["status"] == 403
    assert rec["actor"] == f"api:{TOKENS[who][1].key_id}"


@pytest.mark.parametrize("who", ["acme-reader", "acme-detok"])
def test_tenant_keys_get_403_before_any_validation(who):
    world, audit = World(), Audit()
    api = _api(world, audit)
    for route, tenant, query, body in [("tenant_delete", "*", {}, b""), ("tenants_create", None, {}, b"{not json"),
                                       ("tenant_describe", "A" * 100, {"x": "1"}, b"")]:
        r = _call(api, route, who, tenant=tenant, query=query, body=body)
        assert r.status == 403, route
    assert world.made == [] and [rec["tenant"] for rec in audit.flushed()] == [None, None, None]


def test_no_key_or_unknown_key_is_401():
    world = World()
    api = _api(world)
    assert _call(api, "tenants_list", who=None).status == 401
    r = api.handle("GET", "tenants_list", {}, {}, {"X-API-Key": "stk_" + "f" * 12 + "_" + "A" * 43}, b"")
    assert r.status == 401 and world.made == []


def test_without_the_control_part_operators_get_503_and_others_still_403():
    api = _api(control=False)
    r = _call(api, "tenants_list")
    assert r.status == 503 and r.body["error"]["code"] == "unavailable"
    assert _call(api, "tenants_list", "acme-reader").status == 403


# ---------------------------------------------------------------- operator calls


def test_create_is_201_then_200_with_the_key_as_actor():
    world = World()
    api = _api(world)
    r = _call(api, "tenants_create", body={"name": "newco", "regime": "opt_in", "roles": ["reader", "detokenizer"]})
    assert r.status == 201 and r.headers["Location"] == "/v1/tenants/newco"
    assert r.headers["Cache-Control"] == "no-store"  # credentials: never cached
    assert r.body["status"] == "created" and len(r.body["credentials"]["api_keys"]) == 2
    assert world.calls == [(OPERATOR_ACTOR, "create", "newco", "opt_in", ["reader", "detokenizer"])]
    again = _call(api, "tenants_create", body={"name": "newco"})
    assert again.status == 200 and again.body["status"] == "exists" and "Location" not in again.headers
    assert world.calls[-1] == (OPERATOR_ACTOR, "create", "newco", "opt_out", ["reader"])  # the defaults
    assert world.made == [OPERATOR_ACTOR] * 2 and world.changes == 2


def test_list_describe_rotate_and_head():
    world = World()
    api = _api(world)
    r = _call(api, "tenants_list")
    assert r.status == 200 and r.body == {"tenants": [{"tenant": "acme", "regime": "opt_out", "status": "active",
                                                       "created_at_ms": 1}]}
    assert _call(api, "tenants_list", method="HEAD").status == 200
    assert _call(api, "tenant_describe", tenant="acme").body["tenant"] == "acme"
    r = _call(api, "tenant_describe", tenant="nosuch")
    assert r.status == 404 and r.body["error"] == {"code": "not_found", "message": "no onboarded tenant of this name"}
    assert _call(api, "tenant_rotate_credentials", tenant="acme").status == 200
    assert _call(api, "tenant_rotate_credentials", tenant="nosuch").status == 404
    assert world.changes == 0  # neither created nor deleted a tenant


def test_delete_needs_the_confirmation_and_answers_the_receipt():
    world = World()
    api = _api(world)
    missing = _call(api, "tenant_delete", tenant="acme")
    assert missing.status == 400 and "'confirm' is required" in missing.body["error"]["message"]
    wrong = _call(api, "tenant_delete", tenant="acme", query={"confirm": "globex"})
    assert wrong.status == 400 and wrong.body["error"]["code"] == "confirmation_required"
    assert "globex" not in wrong.body["error"]["message"]
    for q in ({"confirm": "ACME"}, {"confirm": "acme", "yes": "1"}, [("confirm", "acme"), ("confirm", "acme")]):
        assert _call(api, "tenant_delete", tenant="acme", query=q).status == 400, q
    assert world.made == [] and "acme" in world.tenants  # nothing was even built

    r = _call(api, "tenant_delete", tenant="acme", query={"confirm": "acme"})
    assert r.status == 200 and r.body["requested_by"] == OPERATOR_ACTOR and r.body["status"] == "done"
    assert "acme" not in world.tenants and world.changes == 1
    assert _call(api, "tenant_delete", tenant="acme", query={"confirm": "acme"}).status == 404


@pytest.mark.parametrize("tenant", ["*", "ACME", "a" * 64, "t:{acme}:*", "a\nb", "", "-x"])
def test_a_bad_tenant_path_is_400_and_reaches_nothing(tenant):
    world = World()
    api = _api(world)
    for route in ("tenant_describe", "tenant_rotate_credentials"):
        r = _call(api, route, tenant=tenant)
        assert r.status == 400 and r.body["error"]["code"] == "invalid_parameter"
    assert _call(api, "tenant_delete", tenant=tenant, query={"confirm": tenant}).status == 400
    assert world.made == []


def test_unknown_query_parameters_are_400():
    r = _call(_api(), "tenants_list", query={"limit": "5"})
    assert r.status == 400 and "takes: none" in r.body["error"]["message"]


def test_methods_and_paths_of_the_control_routes():
    assert unmatched("PUT", "/v1/tenants").headers["Allow"] == "GET, POST, HEAD"
    assert unmatched("POST", "/v1/tenants/acme").headers["Allow"] == "DELETE, GET, HEAD"
    assert unmatched("GET", "/v1/tenants/acme/rotate-credentials").headers["Allow"] == "POST"
    r = _api().handle("PATCH", "tenant_delete", {"tenant": "acme"}, {}, {}, b"")
    assert r.status == 405 and r.headers["Allow"] == "DELETE"


# ---------------------------------------------------------------- the body


def test_create_body_rules():
    assert parse_create_body(b'{"name": "newco"}') == {"name": "newco", "regime": "opt_out", "roles": ["reader"]}
    assert parse_create_body(b'{"name": "n-1", "regime": "opt_in", "roles": []}') == {
        "name": "n-1", "regime": "opt_in", "roles": []}
    assert parse_create_body(b'{"name": "n", "roles": ["detokenizer", "reader"]}')["roles"] == ["detokenizer",
                                                                                             "reader"]


@pytest.mark.parametrize("body", [
    b"", b"not json", b"[]", b"null", b'"acme"', b"{}", b'{"regime": "opt_in"}', b'{"name": "n", "extra": 1}',
    b'{"name": 5}', b'{"name": "Bad Name"}', b'{"name": "t:{acme}:*"}', b'{"name": "' + b"a" * 64 + b'"}',
    b'{"name": "n", "regime": "opt_maybe"}', b'{"name": "n", "regime": null}', b'{"name": "n", "roles": "reader"}',
    b'{"name": "n", "roles": ["operator"]}', b'{"name": "n", "roles": ["reader", "reader"]}',
    b'{"name": "n", "roles": [1]}', b"\xff\xfe", b'{"name": "n\\u0000"}',
])
def test_bad_create_bodies_are_400_and_reach_nothing(body):
    world = World()
    r = _call(_api(world), "tenants_create", body=body)
    assert r.status == 400 and r.body["error"]["code"] == "invalid_body", body
    assert world.made == []
    for echo in (b"Bad Name", b"opt_maybe", b"t:{acme}"):
        assert echo.decode() not in r.body["error"]["message"]


def test_an_oversized_body_is_413():
    with pytest.raises(ApiError) as exc:
        parse_create_body(b'{"name": "' + b"a" * 20_000 + b'"}')
    assert exc.value.response.status == 413


def test_confirmation():
    check_confirmation("acme", {"confirm": "acme"})
    for q in ({}, {"confirm": "acm"}, {"confirm": None}):
        with pytest.raises(ApiError) as exc:
            check_confirmation("acme", q)
        assert exc.value.response.status == 400


# ---------------------------------------------------------------- errors


def _kafka(code: int) -> KafkaException:
    return KafkaException(KafkaError(code))


def _topic_error_from(exc: Exception) -> TopicError:
    try:
        try:
            raise exc
        except Exception:
            raise TopicError("cannot reach the broker at 10.0.0.1:9092: details") from None
    except TopicError as te:
        return te


@pytest.mark.parametrize("fail,status,code", [
    (TenantNotFound("no tenant x"), 404, "not_found"),
    (InvalidTenantName("invalid tenant name 'X'"), 400, "invalid_parameter"),
    (OnboardingError("creating ACLs failed: Broker: Cluster authorization failed"), 502, "step_failed"),
    (AuditError("audit record not acknowledged"), 503, "audit_unavailable"),
    (_kafka(KafkaError._TRANSPORT), 503, "unavailable"),
    (_kafka(KafkaError._TIMED_OUT), 503, "unavailable"),
    (_kafka(KafkaError.CLUSTER_AUTHORIZATION_FAILED), 502, "step_failed"),
    (_topic_error_from(_kafka(KafkaError._TRANSPORT)), 503, "unavailable"),
    (_topic_error_from(_kafka(KafkaError.POLICY_VIOLATION)), 502, "step_failed"),
    (TopicError("topic tenant.x.events has 1 partitions, 2 declared"), 502, "step_failed"),
    (redis.ConnectionError("Error 111 connecting to 10.0.0.2:6379"), 503, "unavailable"),
    (TimeoutError("Redis AOF rewrite not finished in 60s"), 503, "unavailable"),
])
def test_service_errors_become_clear_answers(fail, status, code):
    world = World()
    world.fail = fail
    r = _call(_api(world), "tenant_rotate_credentials", tenant="acme")
    assert (r.status, r.body["error"]["code"]) == (status, code), r
    text = json.dumps(r.body)
    assert "10.0.0." not in text and "Traceback" not in text
    if status == 503:
        assert r.headers["Retry-After"]


def test_onboarding_error_of_a_tenant_being_deleted_is_409():
    world = World()
    world.fail, world.status = OnboardingError("tenant newco is being deleted; run `streams tenants ...`"), "deleting"
    r = _call(_api(world), "tenants_create", body={"name": "newco"})
    assert r.status == 409 and r.body["error"]["code"] == "conflict" and "DELETE" in r.body["error"]["message"]
    world.status = "active"
    r = _call(_api(world), "tenants_create", body={"name": "newco"})
    assert r.status == 502 and "re-running the operation is safe" in r.body["error"]["message"]


def test_the_status_lookup_failing_does_not_hide_the_error():
    def broken(name: str) -> str | None:
        raise redis.ConnectionError("down")

    err = control_error(OnboardingError("x failed"), lambda: broken("a"))
    assert err is not None and err.response.status == 502


def test_an_unexpected_error_is_500_without_details():
    world = World()
    world.fail = RuntimeError("secret stk_abc")
    r = _call(_api(world), "tenants_list")
    assert r.status == 500 and r.body == {"error": {"code": "internal_error", "message": "internal error"}}
    assert control_error(RuntimeError("x"), lambda: None) is None


def test_kafka_unreachable():
    assert kafka_unreachable(_kafka(KafkaError._ALL_BROKERS_DOWN))
    assert not kafka_unreachable(_kafka(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    assert not kafka_unreachable(KafkaException("text only"))


def test_on_change_failing_does_not_change_the_answer():
    world = World()

    def broken() -> None:
        raise redis.ConnectionError("down")

    api = DataApi(Store([]), Keys(), Detok(), Audit(), lambda t, s: "p", lambda: set(),  # type: ignore[arg-type]
                  TenantControl(world.make, lambda n: None, broken))
    assert _call(api, "tenants_create", body={"name": "newco"}).status == 201


def test_at_most_max_concurrent_calls_run_and_the_next_is_503_busy():
    world = World()
    world.block = threading.Event()
    api = _api(world, max_concurrent=1)
    results: list[Any] = []
    t = threading.Thread(target=lambda: results.append(_call(api, "tenants_list")))
    t.start()
    try:
        assert world.started.wait(10)
        r = _call(api, "tenant_describe", tenant="acme")
        assert r.status == 503 and r.body["error"]["code"] == "busy" and r.headers["Retry-After"]
    finally:
        world.block.set()
        t.join(10)
    assert results[0].status == 200
    world.block = None
    assert _call(api, "tenant_describe", tenant="acme").status == 200  # the slot was given back


def test_actor_audit_names_the_key():
    audit = Audit()
    ActorAudit(audit, OPERATOR_ACTOR).append("tenant.create", "acme", None, "onboarded", {"actor": OPERATOR_ACTOR})
    ActorAudit(audit, OPERATOR_ACTOR).append("x", None, None, "r", actor="other")
    assert [r["actor"] for r in audit.records] == [OPERATOR_ACTOR, "other"]
