"""`streams apikeys` as an operator runs it (a subprocess with the test's settings): create, list, revoke,
the token shown once and never again, every action in the audit trail without the token."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
import redis

from streams.api.api_keys import ApiKeyStore, Role
from streams.audit.log import read_all
from tests.conftest import settings_env

pytestmark = pytest.mark.e2e


def apikeys(s, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams.cli.main", "apikeys", *args], env=settings_env(s),
                          capture_output=True, text=True, timeout=timeout)


def test_create_list_revoke_and_the_audit_trail(make_settings):
    s = make_settings()
    tenant = sorted(s.tenants)[0]
    store = ApiKeyStore(redis.Redis.from_url(s.redis_url))

    op = apikeys(s, "create", "--role", "operator", "--label", "ops on-call", "--actor", "alice")
    assert op.returncode == 0, op.stderr
    assert "shown once" in op.stderr
    created = json.loads(op.stdout)
    assert created["role"] == "operator" and created["tenant"] is None and created["label"] == "ops on-call"
    assert store.authenticate(created["token"]).role is Role.OPERATOR
    reader = json.loads(apikeys(s, "create", "--role", "reader", "--tenant", tenant).stdout)
    assert (reader["tenant"], reader["role"]) == (tenant, "reader")
    assert store.authenticate(reader["token"]).tenant == tenant

    r = apikeys(s, "create", "--role", "reader", "--tenant", "nosuchtenant")
    assert r.returncode == 2 and "unknown tenant nosuchtenant" in r.stderr and r.stdout == ""

    everything = apikeys(s, "list")
    assert everything.returncode == 0, everything.stderr
    listed = {k["key_id"]: k for k in json.loads(everything.stdout)}
    assert {created["key_id"], reader["key_id"]} <= set(listed)
    assert listed[created["key_id"]] == {"key_id": created["key_id"], "tenant": None, "role": "operator",
                                         "label": "ops on-call", "created_at_ms": listed[created["key_id"]][
                                             "created_at_ms"]}
    only_tenant = json.loads(apikeys(s, "list", "--tenant", tenant).stdout)
    assert [k["key_id"] for k in only_tenant] == [reader["key_id"]]
    for key in (created, reader):  # shown once: neither the token nor its hash ever again
        secret = key["token"].split("_", 2)[2]
        for out in (everything.stdout, everything.stderr, json.dumps(only_tenant)):
            assert secret not in out and hashlib.sha256(secret.encode()).hexdigest() not in out
        assert "secret_sha256" not in everything.stdout

    revoked = apikeys(s, "revoke", reader["key_id"], "--actor", "alice")
    assert revoked.returncode == 0, revoked.stderr
    assert json.loads(revoked.stdout)["revoked"] is True
    assert store.authenticate(reader["token"]) is None
    assert store.authenticate(created["token"]) is not None
    again = apikeys(s, "revoke", reader["key_id"])
    assert again.returncode == 2 and f"no API key {reader['key_id']}" in again.stderr
    pasted = apikeys(s, "revoke", created["token"])
    assert pasted.returncode == 2 and created["token"].split("_", 2)[2] not in pasted.stderr
    assert reader["key_id"] not in {k["key_id"] for k in json.loads(apikeys(s, "list").stdout)}

    records = [rec for _, rec in read_all(s.kafka_bootstrap, s.audit_topic) if rec["action"].startswith("apikey.")]
    assert [(r["action"], r["details"].get("key_id"), r["details"].get("role"), r["tenant"]) for r in records] == [
        ("apikey.create", created["key_id"], "operator", None),
        ("apikey.create", reader["key_id"], "reader", tenant),
        ("apikey.list", None, None, None),
        ("apikey.list", None, None, tenant),
        ("apikey.revoke", reader["key_id"], "reader", tenant),
        ("apikey.list", None, None, None),
    ]
    assert records[0]["actor"] == "cli:alice" and records[4]["actor"] == "cli:alice"
    text = json.dumps(records)
    for key in (created, reader):
        assert key["token"].split("_", 2)[2] not in text
    assert "ops on-call" not in text  # labels are free text: not kept in the audit trail
