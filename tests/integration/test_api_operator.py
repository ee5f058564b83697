"""The operator routes through DataApi.handle on the real Redis, broker and audit topic: onboarding, listing,
describing, rotating and deleting a tenant with an operator key, the key as actor in the audit trail and the
receipt, tenant keys refused, and 503 while Kafka or Redis cannot be reached.

``make_settings`` gives a plaintext broker: the tenant service skips the Kafka user and ACL steps (the secure
stack's tests cover them); everything else is real.
"""

from __future__ import annotations

import dataclasses
import json
import uuid

import pytest
import redis
from confluent_kafka.admin import AdminClient

from streams.api.api_keys import ApiKeyStore, Role
from streams.api.control import build_tenant_control
from streams.api.service import DataApi, build_data_api
from streams.audit.log import read_all
from streams.privacy.keys import LocalKeyFileProvider
from streams.sinks import store_keys as K
from streams.tenancy.registry import TenantRegistry
from tests.integration.test_api_data_api import open_audit

pytestmark = pytest.mark.integration


def _h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def operator_api(make_settings):
    s = make_settings()
    provider = LocalKeyFileProvider(s.master_key_file)
    provider.load()  # the worker creates the master key; build_data_api only loads it
    audit = open_audit(s)
    changes: list[int] = []
    api = build_data_api(s, audit, lambda: s.tenants, on_tenants_changed=lambda: changes.append(1))
    client = redis.Redis.from_url(s.redis_url)
    keys = ApiKeyStore(client)
    op_id, op_token = keys.create(None, Role.OPERATOR, "test operator")
    tenant = f"op{uuid.uuid4().hex[:8]}"
    yield s, api, keys, op_id, op_token, tenant, changes, audit, provider
    # A test that failed half-way leaves no tenant behind.
    if TenantRegistry(client).get(tenant) is not None:
        api.handle("DELETE", "tenant_delete", {"tenant": tenant}, {"confirm": tenant}, _h(op_token), b"")
    keys.revoke(op_id)
    api.close()  # the background denial flush, before the audit it writes to
    audit.close()


def test_the_tenant_lifecycle_over_the_operator_routes(operator_api):
    s, api, keys, op_id, op, tenant, changes, audit, _ = operator_api
    client = redis.Redis.from_url(s.redis_url)
    body = json.dumps({"name": tenant, "roles": ["reader", "detokenizer"]}).encode()

    r = api.handle("POST", "tenants_create", {}, {}, _h(op), body)
    assert r.status == 201, r
    assert r.body["tenant"] == tenant and r.body["status"] == "created" and r.body["regime"] == "opt_out"
    creds = r.body["credentials"]
    assert set(creds) == {"redis", "api_keys"}  # plaintext broker: no Kafka user
    tokens = {k["role"]: k["token"] for k in creds["api_keys"]}
    assert set(tokens) == {"reader", "detokenizer"}
    assert keys.authenticate(tokens["reader"]).tenant == tenant
    assert s.tenant_topic(tenant) in AdminClient(s.kafka()).list_topics(timeout=10).topics
    assert changes == [1]

    again = api.handle("POST", "tenants_create", {}, {}, _h(op), body)
    assert again.status == 200 and again.body["status"] == "exists" and again.body["credentials"] == {}

    listed = api.handle("GET", "tenants_list", {}, {}, _h(op), b"")
    assert listed.status == 200 and tenant in {t["tenant"] for t in listed.body["tenants"]}
    desc = api.handle("GET", "tenant_describe", {"tenant": tenant}, {}, _h(op), b"")
    assert desc.status == 200 and desc.body["topics"] == {s.tenant_topic(tenant): s.tenant_partitions,
                                                                s.tenant_raw_topic(tenant): s.partitions}
    assert {k["role"] for k in desc.body["api_keys"]} == {"reader", "detokenizer"}
    assert desc.body["redis_user"]["exists"] is True
    text = json.dumps(desc.body) + json.dumps(listed.body)
    assert "secret_sha256" not in text and '"token"' not in text and creds["redis"]["password"] not in text
    assert not any(t.split("_", 2)[2] in text for t in tokens.values())

    # The tenant's own keys may not manage tenants, not even their own.
    for route, params, q in [("tenants_list", {}, {}), ("tenant_describe", {"tenant": tenant}, {}),
                             ("tenant_delete", {"tenant": tenant}, {"confirm": tenant})]:
        method = "DELETE" if route == "tenant_delete" else "GET"
        assert api.handle(method, route, params, q, _h(tokens["detokenizer"]), b"").status == 403

    rotated = api.handle("POST", "tenant_rotate_credentials", {"tenant": tenant}, {}, _h(op), b"")
    assert rotated.status == 200
    new_tokens = {k["role"]: k["token"] for k in rotated.body["credentials"]["api_keys"]}
    assert set(new_tokens) == {"reader", "detokenizer"}
    assert keys.authenticate(tokens["reader"]) is None and keys.authenticate(new_tokens["reader"]) is not None

    # A stray DELETE changes nothing.
    for q in ({}, {"confirm": "someone-else"}):
        r = api.handle("DELETE", "tenant_delete", {"tenant": tenant}, q, _h(op), b"")
        assert r.status == 400, q
    assert TenantRegistry(client).get(tenant) is not None and keys.authenticate(new_tokens["reader"]) is not None

    r = api.handle("DELETE", "tenant_delete", {"tenant": tenant}, {"confirm": tenant}, _h(op), b"")
    assert r.status == 200, r
    receipt = r.body
    assert receipt["tenant"] == tenant and receipt["status"] == "done" and receipt["requested_by"] == f"api:{op_id}"
    assert [st["step"] for st in receipt["steps"]] == ["registry", "fence", "keys", "api_keys", "redis_user", "topics",
                                                       "store", "aof", "registry"]
    assert TenantRegistry(client).receipt(receipt["receipt_id"]) == receipt
    assert keys.authenticate(new_tokens["reader"]) is None
    assert not list(client.scan_iter(match=f"{K.store_prefix(tenant)}*"))
    assert len(changes) == 3  # created, created again (it may have completed something), deleted

    for method, route, q in [("GET", "tenant_describe", {}), ("POST", "tenant_rotate_credentials", {}),
                             ("DELETE", "tenant_delete", {"confirm": tenant})]:
        r = api.handle(method, route, {"tenant": tenant}, q, _h(op), b"")
        assert r.status == 404 and r.body["error"]["code"] == "not_found", route

    api.flush_denials()  # the worker's background flush does this every STREAMS_API_DENIAL_AUDIT_WINDOW
    records = [rec for _, rec in read_all(s.kafka_bootstrap, s.audit_topic)]
    mine = [rec for rec in records if rec.get("tenant") == tenant and rec["action"].startswith("tenant.")]
    assert [(rec["action"], rec["actor"]) for rec in mine] == [
        ("tenant.create", f"api:{op_id}"), ("tenant.create", f"api:{op_id}"),
        ("tenant.rotate_credentials", f"api:{op_id}"), ("tenant.delete", f"api:{op_id}")]
    denied = [rec for rec in records if rec["action"] == "api.denied" and rec["details"]["key_role"] == "detokenizer"]
    assert {rec["details"]["route"] for rec in denied} == {"tenants_list", "tenant_describe", "tenant_delete"}
    text = json.dumps(records)
    # A token's secret is what follows "stk_<key id>_"; a Redis password is secret whole (it may hold
    # "_" itself: splitting it left a one-letter fragment that any text contains).
    for password in [creds["redis"]["password"], rotated.body["credentials"]["redis"]["password"]]:
        assert password not in text
    for token in [*tokens.values(), *new_tokens.values(), op]:
        assert token.startswith("stk_") and token.split("_", 2)[2] not in text


def test_create_with_opt_in_and_bad_bodies(operator_api):
    s, api, keys, op_id, op, tenant, _, _, _ = operator_api
    for bad in (b"{}", b'{"name": "Bad"}', json.dumps({"name": tenant, "roles": ["operator"]}).encode(),
                json.dumps({"name": tenant, "regime": "always"}).encode(), b"x" * 20_000):
        r = api.handle("POST", "tenants_create", {}, {}, _h(op), bad)
        assert r.status in (400, 413), bad[:40]
    assert TenantRegistry(redis.Redis.from_url(s.redis_url)).get(tenant) is None  # nothing was made

    r = api.handle("POST", "tenants_create", {}, {}, _h(op),
                   json.dumps({"name": tenant, "regime": "opt_in", "roles": []}).encode())
    assert r.status == 201 and r.body["regime"] == "opt_in" and "api_keys" not in r.body["credentials"]
    assert keys.list(tenant) == []


def test_a_tenant_being_deleted_is_a_conflict(operator_api):
    s, api, _, _, op, tenant, _, _, _ = operator_api
    body = json.dumps({"name": tenant}).encode()
    assert api.handle("POST", "tenants_create", {}, {}, _h(op), body).status == 201
    registry = TenantRegistry(redis.Redis.from_url(s.redis_url))
    record = registry.get(tenant)
    registry.put(dataclasses.replace(record, status="deleting"))  # a delete that stopped half-way
    r = api.handle("POST", "tenants_create", {}, {}, _h(op), body)
    assert r.status == 409 and r.body["error"]["code"] == "conflict"
    # Repeating the delete finishes it.
    r = api.handle("DELETE", "tenant_delete", {"tenant": tenant}, {"confirm": tenant}, _h(op), b"")
    assert r.status == 200 and registry.get(tenant) is None


def test_kafka_or_redis_unreachable_is_503(operator_api):
    s, api, keys, _, op, tenant, _, audit, provider = operator_api
    assert api.handle("POST", "tenants_create", {}, {}, _h(op), json.dumps({"name": tenant}).encode()).status == 201

    def api_with(**broken: str) -> DataApi:
        control = build_tenant_control(dataclasses.replace(s, **broken), audit, provider)
        # The key store stays on the live Redis: the caller is authenticated, then the control part fails.
        return DataApi(None, keys, None, audit, None, lambda: set(), control)  # type: ignore[arg-type]

    # One call only: the tenant service waits its own timeout (30 s) for the broker before it gives up.
    # (The other shapes of a broker that cannot be reached are in tests/unit/test_api_control.py.)
    no_kafka = api_with(kafka_bootstrap="127.0.0.1:1")
    r = no_kafka.handle("GET", "tenant_describe", {"tenant": tenant}, {}, _h(op), b"")
    assert r.status == 503 and r.body["error"]["code"] == "unavailable" and "Kafka" in r.body["error"]["message"]
    assert r.headers["Retry-After"]

    no_redis = api_with(redis_url="redis://127.0.0.1:1/0")
    for method, route, params, q in [("GET", "tenants_list", {}, {}),
                                     ("DELETE", "tenant_delete", {"tenant": tenant}, {"confirm": tenant})]:
        r = no_redis.handle(method, route, params, q, _h(op), b"")
        assert r.status == 503 and "Redis" in r.body["error"]["message"], route
    # Nothing happened to the tenant meanwhile.
    assert api.handle("GET", "tenant_describe", {"tenant": tenant}, {}, _h(op), b"").body["status"] == "active"
