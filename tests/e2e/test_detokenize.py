"""Tokens in the tenant stream are reversible only through `streams detokenize`, which is audited; rotation keeps them reversible; a destroyed subject key ends that."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import redis

from streams.audit.log import read_all
from streams.ingest import samples
from streams.ingest.producer import EventProducer
from streams.privacy.keys import KeyStore, LocalKeyFileProvider
from streams.schema import codec
from streams.schema.registry import SchemaRegistry
from tests.conftest import settings_env
from tests.kafka_read import read_topic

pytestmark = pytest.mark.e2e


def _cli(s, *args):
    return subprocess.run([sys.executable, "-m", "streams.cli.main", *args], env=settings_env(s),
                          capture_output=True, text=True, timeout=120)


def test_detokenize_rotate_destroy_and_audit(make_settings, start_worker):
    s = make_settings()
    tenant = sorted(s.tenants)[0]
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    email = "detok.person@example.com"
    event = samples.signup(tenant, "dt-1", email=email)
    producer = EventProducer(s.kafka_bootstrap, s.raw_topic, registry)
    producer.send(event)
    producer.flush()
    start_worker(s)
    [msg] = read_topic(s.kafka_bootstrap, s.tenant_topic(tenant), expect=1, timeout=60)
    _, clean = codec.decode(SchemaRegistry.load_dir(s.schemas_dir / "clean"), msg.value())
    token = clean["email"]
    assert token.startswith("tok.email.") and email not in msg.value().decode("latin-1")

    r = _cli(s, "detokenize", tenant, "dt-1", token, "--reason", "support ticket T-1", "--actor", "alice")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == email

    r = _cli(s, "detokenize", tenant, "dt-1", token, "--reason", "")
    assert r.returncode == 2 and "reason is required" in r.stderr
    r = _cli(s, "detokenize", tenant, "someone-else", token, "--reason", "wrong subject check")
    assert r.returncode == 2 and email not in r.stdout + r.stderr

    r = _cli(s, "keys", "rotate", tenant)
    assert r.returncode == 0 and "-> 2" in r.stdout, r.stderr
    r = _cli(s, "detokenize", tenant, "dt-1", token, "--reason", "after rotation")
    assert r.returncode == 0 and r.stdout.strip() == email

    store = KeyStore(redis.Redis.from_url(s.redis_url), LocalKeyFileProvider(s.master_key_file))
    assert store.destroy_subject_key(tenant, "dt-1")
    r = _cli(s, "detokenize", tenant, "dt-1", token, "--reason", "after erasure")
    assert r.returncode == 2 and "erased" in r.stderr and email not in r.stdout

    # Every call is in the audit trail, with who and why, and no value, token or subject id.
    records = [rec for _, rec in read_all(s.kafka_bootstrap, s.audit_topic)]
    detok = [rec for rec in records if rec.get("action") == "detokenize" and rec.get("tenant") == tenant]
    assert [rec["details"]["outcome"] for rec in detok] == ["ok", "refused", "ok", "refused"]
    assert detok[0]["actor"] == "cli:alice" and detok[0]["reason"] == "support ticket T-1"
    text = json.dumps(detok)
    assert email not in text and token not in text and "dt-1" not in text
    assert detok[0]["subject"].startswith("p_")
    assert _cli(s, "audit", "verify").returncode == 0
