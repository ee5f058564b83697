"""API keys on a real Redis: only a hash is stored, outside the tenants' keyspace; revocation; listing."""

from __future__ import annotations

import hashlib
import uuid
from typing import Iterator

import pytest
import redis

from streams.api.api_keys import ApiKeyStore, Principal, Role, parse_token
from streams.keyspace import api_key_hash_key, api_tenant_set_key
from streams.tenancy.exceptions import InvalidTenantName

pytestmark = pytest.mark.integration


@pytest.fixture(params=[False, True], ids=["bytes", "decoded"])
def client(stack, request) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(stack.redis_url, socket_timeout=10, decode_responses=request.param)
    yield c
    c.close()


def _tenant(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def _all_values(client: redis.Redis, pattern: str) -> str:
    """Every key name and value under ``pattern``, as one text to search in."""
    out = []
    for k in client.scan_iter(match=pattern, count=1000):
        out.append(str(k))
        kind = client.type(k)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        if kind == "hash":
            out.append(str(client.hgetall(k)))
        elif kind == "set":
            out.append(str(client.smembers(k)))
        elif kind == "string":
            out.append(str(client.get(k)))
        elif kind == "zset":
            out.append(str(client.zrange(k, 0, -1)))
        elif kind == "list":
            out.append(str(client.lrange(k, 0, -1)))
        elif kind == "stream":
            out.append(str(client.xrange(k)))
    return "\n".join(out)


def test_create_and_authenticate_store_only_a_hash(client):
    keys = ApiKeyStore(client)
    tenant = _tenant()
    key_id, token = keys.create(tenant, Role.READER, "analytics notebook")
    assert token.startswith(f"stk_{key_id}_") and parse_token(token) == (key_id, token.split("_", 2)[2])
    assert keys.authenticate(token) == Principal(key_id, tenant, Role.READER)

    secret = token.split("_", 2)[2]
    stored = _all_values(client, "*")  # the whole database, not only api:*
    assert secret not in stored and token not in stored
    assert hashlib.sha256(secret.encode()).hexdigest() in _all_values(client, "api:*")
    # Nothing of the key lives where a tenant's Redis ACL user could read it. The tenant's keyspace
    # holds a planted document, which the same search finds (it is not an empty keyspace).
    planted = f"t:{{{tenant}}}:ev:{uuid.uuid4()}"
    client.set(planted, "planted store document")
    try:
        tenant_space = _all_values(client, f"t:{{{tenant}}}:*")
        assert "planted store document" in tenant_space
        assert key_id not in tenant_space
    finally:
        client.delete(planted)
    assert client.sismember(api_tenant_set_key(tenant), key_id)


def test_wrong_secret_unknown_and_malformed_tokens_authenticate_nobody(client):
    keys = ApiKeyStore(client)
    key_id, token = keys.create(_tenant(), Role.DETOKENIZER)
    other_secret = "B" * 43 if not token.endswith("B" * 43) else "C" * 43
    assert keys.authenticate(f"stk_{key_id}_{other_secret}") is None
    assert keys.authenticate(f"stk_{'0' * 12}_{'A' * 43}") is None
    for bad in ["", token + "x", token[:-1], token.upper(), f"stk_{key_id}_*", "stk_*_*"]:
        assert keys.authenticate(bad) is None


def test_operator_keys_have_no_tenant(client):
    keys = ApiKeyStore(client)
    key_id, token = keys.create(None, Role.OPERATOR, "ops")
    assert keys.authenticate(token) == Principal(key_id, None, Role.OPERATOR)
    assert any(k["key_id"] == key_id and k["tenant"] is None for k in keys.list())
    assert keys.revoke(key_id) and keys.authenticate(token) is None


def test_create_refuses_inconsistent_keys(client):
    keys = ApiKeyStore(client)
    with pytest.raises(ValueError):
        keys.create("acme", Role.OPERATOR)
    with pytest.raises(ValueError):
        keys.create(None, Role.READER)
    with pytest.raises(InvalidTenantName):
        keys.create("t:{x}*", Role.READER)
    with pytest.raises(ValueError):
        keys.create(_tenant(), Role.READER, "line\nbreak")


def test_revoke_and_revoke_tenant(client):
    keys = ApiKeyStore(client)
    a, b = _tenant("a"), _tenant("b")
    a1, ta1 = keys.create(a, Role.READER)
    a2, ta2 = keys.create(a, Role.DETOKENIZER)
    b1, tb1 = keys.create(b, Role.READER)

    assert keys.revoke(a1) is True and keys.revoke(a1) is False
    assert keys.authenticate(ta1) is None and keys.authenticate(ta2) is not None
    assert [k["key_id"] for k in keys.list(a)] == [a2]
    assert keys.revoke("not-an-id") is False

    a3, ta3 = keys.create(a, Role.READER)
    assert keys.revoke_tenant(a) == 2
    assert keys.authenticate(ta2) is None and keys.authenticate(ta3) is None
    assert keys.list(a) == [] and not client.exists(api_key_hash_key(a3), api_tenant_set_key(a))
    assert keys.authenticate(tb1) == Principal(b1, b, Role.READER)  # another tenant's keys stay
    assert keys.revoke_tenant(a) == 0


def test_list_gives_metadata_never_hashes(client):
    keys = ApiKeyStore(client)
    tenant = _tenant()
    ids = [keys.create(tenant, role, f"label {i}")[0] for i, role in enumerate([Role.READER, Role.DETOKENIZER])]
    listed = keys.list(tenant)
    assert [k["key_id"] for k in listed] == ids
    assert listed[0]["role"] == "reader" and listed[1]["label"] == "label 1" and listed[0]["tenant"] == tenant
    assert all(set(k) == {"key_id", "tenant", "role", "label", "created_at_ms"} for k in listed)
    assert all(k["created_at_ms"] > 1_600_000_000_000 for k in listed)
    everyone = {k["key_id"] for k in keys.list()}
    assert set(ids) <= everyone
    keys.revoke_tenant(tenant)
