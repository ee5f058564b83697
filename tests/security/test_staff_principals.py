"""The privacy officer's and the auditor's own credentials (`streams principals`): each does its
job, and is refused everything else, with plain clients; refusals change nothing."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
import redis
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from streams.audit.keys import open_audit_log
from streams.settings import sasl_config
from streams.privacy.keys import pipeline_prefix
from streams.sinks import store_keys as K
from streams.tenancy.onboarding import build_service
from streams.tenancy.principals import build_principals
from tests.conftest import settings_env

pytestmark = [pytest.mark.integration, pytest.mark.security]


@pytest.fixture
def staff(make_secure_settings):
    s = make_secure_settings()
    tenant = f"t{uuid.uuid4().hex[:8]}"
    audit = open_audit_log(s, "test:security")
    build_service(s, "test:security", lambda: audit).create(tenant)
    svc = build_principals(s, "test:security", audit)
    for role in ("privacy-officer", "auditor"):
        svc.delete(role)  # the stack is shared by the session: start from no user
    creds = {role: svc.create(role)["credentials"] for role in ("privacy-officer", "auditor")}
    yield s, svc, tenant, creds
    for role in ("privacy-officer", "auditor"):
        svc.delete(role)
    audit.close()


def _produce_error(conf: dict, topic: str) -> KafkaError | None:
    out: list = []
    p = Producer({**conf, "message.timeout.ms": 8000, "log_level": 0})
    p.produce(topic, b"x", b"k", partition=0, on_delivery=lambda e, _m: out.append(e))
    p.flush(15)
    assert out
    return out[0]


def _ends(s, topic: str) -> list[int]:
    c = Consumer({**s.kafka(), "group.id": "security-ends", "log_level": 0})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in sorted(parts)]
    finally:
        c.close()


def _redis_url(s, user: str, password: str) -> str:
    u = redis.connection.parse_url(s.redis_url)
    return f"redis://{user}:{password}@{u['host']}:{u['port']}/0"


def test_privacy_officer_files_requests_and_nothing_else(staff):
    s, _, tenant, creds = staff
    k, rd = creds["privacy-officer"]["kafka"], creds["privacy-officer"]["redis"]
    env = {**settings_env(s), "STREAMS_KAFKA_USERNAME": k["username"], "STREAMS_KAFKA_PASSWORD": k["password"],
           "STREAMS_REDIS_URL": _redis_url(s, rd["username"], rd["password"])}
    before = sum(_ends(s, s.requests_topic))
    r = subprocess.run([sys.executable, "-m", "streams.cli.main", "privacy", "file", tenant, "--type", "opt_out",
                        "--subject", "s-1"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert sum(_ends(s, s.requests_topic)) == before + 1

    conf = sasl_config(s.kafka_bootstrap, k["username"], k["password"])
    watched = [s.raw_topic, s.tenant_raw_topic(tenant), s.tenant_topic(tenant), s.audit_topic, s.dlq_topic, s.quarantine_topic]
    ends = {t: _ends(s, t) for t in watched}
    for topic in watched:
        err = _produce_error(conf, topic)
        assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, topic
    assert {t: _ends(s, t) for t in watched} == ends

    admin = redis.Redis.from_url(s.redis_url)
    admin.set(f"{K.store_prefix(tenant)}ev:1", b"{}")
    officer = redis.Redis.from_url(_redis_url(s, rd["username"], rd["password"]))
    assert officer.hget("tenancy:tenants", tenant) is not None  # control: its reads work
    for denied in (lambda: officer.get(f"{pipeline_prefix(tenant)}tenant"),  # key material
                   lambda: officer.get(f"{K.store_prefix(tenant)}ev:1"),  # tenant data
                   lambda: officer.set(f"{pipeline_prefix(tenant)}receipt:forged", b"{}"),  # read-only
                   lambda: officer.dbsize(), lambda: officer.keys("*")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            denied()
    assert admin.get(f"{pipeline_prefix(tenant)}receipt:forged") is None


def test_auditor_verifies_the_audit_trail_and_writes_nothing(staff):
    """The auditor runs `streams audit verify` with nothing but its own credentials (Kafka read of
    the trail, Redis read of the public keys) and it verifies; writing the trail or a request, or
    reading a private signing key, is refused."""
    s, _, _, creds = staff
    k, rd = creds["auditor"]["kafka"], creds["auditor"]["redis"]
    assert sum(_ends(s, s.audit_topic)) > 0  # onboarding and the principals were audited
    env = {**settings_env(s), "STREAMS_KAFKA_USERNAME": k["username"], "STREAMS_KAFKA_PASSWORD": k["password"],
           "STREAMS_REDIS_URL": _redis_url(s, rd["username"], rd["password"])}
    r = subprocess.run([sys.executable, "-m", "streams.cli.main", "audit", "verify"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "test:security" in r.stdout or "cli:" in r.stdout or "writer" in r.stdout.lower(), r.stdout

    conf = sasl_config(s.kafka_bootstrap, k["username"], k["password"])
    ends = {t: _ends(s, t) for t in (s.audit_topic, s.requests_topic)}
    for topic in (s.audit_topic, s.requests_topic):
        err = _produce_error(conf, topic)
        assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, topic
    assert {t: _ends(s, t) for t in ends} == ends
    auditor = redis.Redis.from_url(_redis_url(s, rd["username"], rd["password"]))
    assert auditor.hgetall(f"audit:{{{s.audit_topic}}}:pub")  # control: the public keys are readable
    admin = redis.Redis.from_url(s.redis_url)
    signers = list(admin.scan_iter(match=f"audit:{{{s.audit_topic}}}:signer:*"))
    assert signers
    for key in signers:
        with pytest.raises(redis.exceptions.NoPermissionError):
            auditor.hgetall(key)


def test_rotating_a_staff_principal_revokes_its_old_passwords(staff):
    s, svc, _, creds = staff
    old = creds["privacy-officer"]
    new = svc.rotate("privacy-officer")["credentials"]
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis.from_url(_redis_url(s, old["redis"]["username"], old["redis"]["password"])).ping()
    assert redis.Redis.from_url(_redis_url(s, new["redis"]["username"], new["redis"]["password"])).ping()
    err = _produce_error(sasl_config(s.kafka_bootstrap, old["kafka"]["username"], old["kafka"]["password"]),
                         s.requests_topic)
    assert err is not None and err.code() in (KafkaError._AUTHENTICATION, KafkaError._MSG_TIMED_OUT,
                                              KafkaError._TRANSPORT)
    assert _produce_error(sasl_config(s.kafka_bootstrap, new["kafka"]["username"], new["kafka"]["password"]),
                          s.requests_topic) is None
