"""Tenant onboarding and isolation on the secure stack: SASL/SCRAM broker with the
StandardAuthorizer (nothing allowed without an ACL) and Redis with ACL users.

Tenant A's credentials, as `streams tenants create` hands them out, must get an
authorization error for anything of tenant B, and every denied attempt leaves a
record: the broker's authorizer log for Kafka, Redis' ACL LOG for Redis.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from streams.api.api_keys import ApiKeyStore
from streams.audit.keys import open_audit_log
from streams.audit.log import read_all
from streams.settings import sasl_config
from streams.sinks import store_keys as K
from streams.tenancy.onboarding import build_service

pytestmark = pytest.mark.integration


def _tenant() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def onboarded(make_secure_settings):
    s = make_secure_settings()
    audit = open_audit_log(s, "test:isolation")
    svc = build_service(s, "test:isolation", lambda: audit)
    a, b = _tenant(), _tenant()
    creds = {t: svc.create(t, roles=["reader", "detokenizer"])["credentials"] for t in (a, b)}
    yield s, svc, a, b, creds
    audit.close()


def _consume_error(conf: dict, topic: str, assign: bool = False, timeout: float = 20.0) -> KafkaError | None:
    """The first error a consumer gets reading ``topic``; None once it has read a record.
    Errors come as error events from poll() or through error_cb (librdkafka uses both)."""
    errors: list[KafkaError] = []
    c = Consumer({**conf, "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "error_cb": errors.append, "log_level": 0})
    try:
        if assign:
            c.assign([TopicPartition(topic, 0, 0)])
        else:
            c.subscribe([topic])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() and m.error().code() != KafkaError._PARTITION_EOF:
                errors.append(m.error())
            elif m is not None and not m.error():
                return None
            authz = [e for e in errors if e.code() in (KafkaError.TOPIC_AUTHORIZATION_FAILED,
                                                       KafkaError.GROUP_AUTHORIZATION_FAILED)]
            if authz:
                return authz[0]
        raise AssertionError(f"neither a record nor an authorization error in {timeout}s: {errors[:3]}")
    finally:
        c.close()


def test_create_is_idempotent_and_shows_credentials_once(onboarded):
    s, svc, a, b, creds = onboarded
    assert set(creds[a]) == {"kafka", "producer", "redis", "api_keys"}
    # A re-run repairs a user widened by hand, and keeps its password.
    admin = redis.Redis.from_url(s.redis_url)
    admin.execute_command("ACL", "SETUSER", f"tenant-{a}", "~*", "+@all")
    svc.create(a, roles=["reader", "detokenizer"])
    url = redis.connection.parse_url(s.redis_url)
    ra = redis.Redis(host=url["host"], port=url["port"], username=creds[a]["redis"]["username"],
                     password=creds[a]["redis"]["password"])
    assert ra.ping()
    for denied in (lambda: ra.get(f"{K.store_prefix(b)}x"), lambda: ra.set(f"{K.store_prefix(a)}x", b"1")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            denied()
    assert {k["role"] for k in creds[a]["api_keys"]} == {"reader", "detokenizer"}
    again = svc.create(a, roles=["reader", "detokenizer"])
    assert again["status"] == "exists" and again["credentials"] == {}
    desc = svc.describe(a)
    assert desc["kafka_user"]["exists"] and desc["redis_user"]["exists"]
    assert len(desc["kafka_user"]["acls"]) == 4
    assert desc["topics"] == {s.tenant_topic(a): s.tenant_partitions, s.tenant_raw_topic(a): s.partitions}
    assert desc["producer_user"]["exists"] and len(desc["producer_user"]["acls"]) == 2
    text = repr(desc) + repr(svc.list())
    for secret in (creds[a]["kafka"]["password"], creds[a]["redis"]["password"], creds[a]["api_keys"][0]["token"]):
        assert secret not in text
    # API keys are stored hashed: the token is in no key or value of any type under api:*, while
    # the same search finds the key's id there (a search that can succeed).
    r = redis.Redis.from_url(s.redis_url)
    token = creds[a]["api_keys"][0]["token"].encode()
    key_id = creds[a]["api_keys"][0]["key_id"].encode()
    blobs = [_redis_value(r, k) for k in r.scan_iter(match="api:*")]
    assert any(key_id in b for b in blobs)
    assert not any(token in b for b in blobs)


def _redis_value(r: redis.Redis, key: bytes) -> bytes:
    """A key's name and its whole value, whatever its type, as bytes to search."""
    t = r.type(key)
    if t == b"string":
        v = [r.get(key) or b""]
    elif t == b"hash":
        v = [x for kv in r.hgetall(key).items() for x in kv]
    elif t == b"set":
        v = list(r.smembers(key))
    elif t == b"zset":
        v = [m for m, _ in r.zrange(key, 0, -1, withscores=True)]
    elif t == b"list":
        v = r.lrange(key, 0, -1)
    else:
        raise AssertionError(f"unexpected type {t!r} of {key!r}")
    return key + b"\0" + b"\0".join(v)


def _auth_fails(conf: dict) -> KafkaError:
    """Authentication with ``conf`` fails: the SASL error librdkafka reports (not a timeout)."""
    errors: list[KafkaError] = []
    c = Consumer({**conf, "log_level": 0, "error_cb": errors.append})
    try:
        with pytest.raises(KafkaException):
            c.list_topics(timeout=8)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(e.code() == KafkaError._AUTHENTICATION for e in errors):
            c.poll(0.2)
    finally:
        c.close()
    auth = [e for e in errors if e.code() == KafkaError._AUTHENTICATION]
    assert auth, f"no authentication error, only {errors[:3]}"
    return auth[0]


def test_kafka_credentials_reach_only_their_own_tenant(onboarded, secure_stack):
    s, _, a, b, creds = onboarded
    admin_producer = Producer(s.kafka())
    for t in (a, b):
        admin_producer.produce(s.tenant_topic(t), b"clean event", f"subj/{t}".encode(), partition=0)
    assert admin_producer.flush(20) == 0
    conf_a = sasl_config(s.kafka_bootstrap, creds[a]["kafka"]["username"], creds[a]["kafka"]["password"])

    # Own topic, own group: readable.
    assert _consume_error({**conf_a, "group.id": f"tenant.{a}.reader"}, s.tenant_topic(a)) is None
    # B's topic with A's own group: topic authorization error.
    err = _consume_error({**conf_a, "group.id": f"tenant.{a}.reader2"}, s.tenant_topic(b))
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # B's group on A's own topic: group authorization error.
    err = _consume_error({**conf_a, "group.id": f"tenant.{b}.reader"}, s.tenant_topic(a))
    assert err is not None and err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED
    # Pipeline topics (raw PII) are not readable either, and A cannot write even its own topic.
    err = _consume_error({**conf_a, "group.id": f"tenant.{a}.raw"}, s.raw_topic)
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # Nor the quarantine (sealed originals of every tenant's rejected events).
    admin_producer.produce(s.quarantine_topic, b"{}", b"-/q-control", partition=0)
    assert admin_producer.flush(20) == 0
    err = _consume_error({**conf_a, "group.id": f"tenant.{a}.quarantine"}, s.quarantine_topic)
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    errors: list = []
    p = Producer({**conf_a, "message.timeout.ms": 10000})
    p.produce(s.tenant_topic(a), b"forged", on_delivery=lambda e, _m: errors.append(e))
    p.flush(15)
    assert errors and errors[0] is not None and errors[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # Wrong password: authentication fails, nothing is read.
    bad = sasl_config(s.kafka_bootstrap, creds[a]["kafka"]["username"], "not-the-password")
    _auth_fails({**bad, "group.id": f"tenant.{a}.x"})

    # Every denial is in the broker's authorizer log, naming A's principal and B's resource.
    info, _ = secure_stack
    log = Path(info.log_files[0]).parent / "kafka-authorizer.log"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and s.tenant_topic(b) not in (log.read_text() if log.exists() else ""):
        time.sleep(0.5)
    text = log.read_text()
    assert f"User:tenant-{a}" in text and "Denied" in text and s.tenant_topic(b) in text
    assert f"tenant.{b}.reader" in text


def test_redis_user_reaches_only_its_keyspace(onboarded):
    s, _, a, b, creds = onboarded
    admin = redis.Redis.from_url(s.redis_url)
    admin.set(f"{K.store_prefix(a)}ev:1", b"a's doc")
    admin.set(f"{K.store_prefix(b)}ev:1", b"b's doc")
    url = redis.connection.parse_url(s.redis_url)
    ra = redis.Redis(host=url["host"], port=url["port"], username=creds[a]["redis"]["username"],
                     password=creds[a]["redis"]["password"])
    assert ra.get(f"{K.store_prefix(a)}ev:1") == b"a's doc"
    for denied in (lambda: ra.get(f"{K.store_prefix(b)}ev:1"), lambda: ra.scan(0), lambda: ra.keys("*"),
                   lambda: ra.randomkey(), lambda: ra.flushall(), lambda: ra.flushdb(),
                   lambda: ra.set(f"{K.store_prefix(a)}ev:2", b"x"),  # read-only
                   lambda: ra.get("k:{" + a + "}:tenant"),  # its own key material is not its to read
                   lambda: ra.hgetall("api:key:x")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            denied()
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(host=url["host"], port=url["port"], username=creds[a]["redis"]["username"],
                    password="wrong").ping()
    log = admin.acl_log(count=50)
    mine = [e for e in log if e.get("username") == creds[a]["redis"]["username"]]
    # Command denials log the command; key denials log the key (B's, here).
    assert {e["object"] for e in mine if e["reason"] == "command"} >= {"scan", "keys", "flushall", "randomkey"}
    assert f"{K.store_prefix(b)}ev:1" in {e["object"] for e in mine if e["reason"] == "key"}


def test_rotation_revokes_old_credentials(onboarded):
    s, svc, a, _, creds = onboarded
    old = creds[a]
    new = svc.rotate_credentials(a)["credentials"]
    keys = ApiKeyStore(redis.Redis.from_url(s.redis_url))
    assert keys.authenticate(old["api_keys"][0]["token"]) is None
    assert {k["role"] for k in new["api_keys"]} == {"reader", "detokenizer"}
    assert all(keys.authenticate(k["token"]).tenant == a for k in new["api_keys"])
    url = redis.connection.parse_url(s.redis_url)
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(host=url["host"], port=url["port"], username=old["redis"]["username"],
                    password=old["redis"]["password"]).ping()
    assert redis.Redis(host=url["host"], port=url["port"], username=new["redis"]["username"],
                       password=new["redis"]["password"]).ping()
    conf_old = {**sasl_config(s.kafka_bootstrap, old["kafka"]["username"], old["kafka"]["password"]),
                "group.id": f"tenant.{a}.r"}
    _auth_fails(conf_old)
    p = Producer(s.kafka())
    p.produce(s.tenant_topic(a), b"clean event", b"subj/1", partition=0)
    assert p.flush(20) == 0
    conf_new = {**sasl_config(s.kafka_bootstrap, new["kafka"]["username"], new["kafka"]["password"]),
                "group.id": f"tenant.{a}.r"}
    assert _consume_error(conf_new, s.tenant_topic(a)) is None


def test_delete_erases_everything_with_a_receipt(onboarded):
    s, svc, a, b, creds = onboarded
    admin = redis.Redis.from_url(s.redis_url)
    admin.set(f"{K.store_prefix(a)}ev:1", b"doc")
    receipt = svc.delete(a)
    assert receipt["status"] == "done"
    steps = [st["step"] for st in receipt["steps"]]
    assert steps == ["registry", "fence", "keys", "api_keys", "kafka_acls", "kafka_quotas", "kafka_user", "producer_user",
                     "redis_user",
                     "topics", "store", "aof", "registry"]
    assert all(st["at_ms"] >= receipt["started_at_ms"] for st in receipt["steps"])
    # Nothing of A is left but its deleted mark, which keeps it deleted (STREAMS_TENANTS cannot revive it).
    assert [k.decode() for k in admin.scan_iter(match=f"*{{{a}}}*")] == [f"tenancy:{{{a}}}:deleted"]
    assert admin.acl_getuser(f"tenant-{a}") is None
    assert not {s.tenant_topic(a), s.tenant_raw_topic(a)} & set(svc.admin.list_topics(timeout=10).topics)
    assert svc.registry.get(a) is None and svc.registry.receipt(receipt["receipt_id"])["tenant"] == a
    assert ApiKeyStore(admin).authenticate(creds[a]["api_keys"][0]["token"]) is None
    # B is untouched; deleting again says there is no such tenant (nothing changes).
    assert svc.describe(b)["kafka_user"]["exists"]
    from streams.tenancy.exceptions import TenantNotFound

    with pytest.raises(TenantNotFound):
        svc.delete(a)
    actions = [rec["action"] for _, rec in read_all(s.kafka(), s.audit_topic)]
    assert actions.count("tenant.create") == 2 and "tenant.delete" in actions
