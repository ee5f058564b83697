"""Attacks on the secure broker with plain clients: each is refused, and nothing changed.

The secure stack (SASL/SCRAM on the client listener, SASL/PLAIN on the controller
listener, StandardAuthorizer, nothing allowed without an ACL) as `streams stack` runs it.
Every test asserts the refusal *and* that the state it attacked is as before (no ACL
added, no user created, no record written), with a control that shows the same client
does succeed where it is allowed to.
"""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AclBindingFilter, AclOperation, AclPermissionType, AdminClient,
                                   ResourcePatternType, ResourceType)

from streams.settings import sasl_config
from streams.devstack.stack import LocalKafka
from streams.tenancy.onboarding import build_service
from tests.security import kafka_wire as wire

pytestmark = [pytest.mark.integration, pytest.mark.security]


def _tenant() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def tenants(make_secure_settings):
    s = make_secure_settings()
    svc = build_service(s, "test:security")
    a, b = _tenant(), _tenant()
    creds = {t: svc.create(t)["credentials"] for t in (a, b)}
    return s, svc, a, b, creds


def _host_port(bootstrap: str) -> tuple[str, int]:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    return host, int(port)


def _all_acls(admin: AdminClient) -> set[str]:
    f = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
                         AclPermissionType.ANY)
    return {f"{b.principal} {b.operation.name} {b.restype.name} {b.name}"
            for b in admin.describe_acls(f, request_timeout=20).result()}


def _produce_error(conf: dict, topic: str, value: bytes = b"x", key: bytes = b"k") -> KafkaError | None:
    """The delivery error of one record to partition 0 (None: the broker took it)."""
    out: list = []
    p = Producer({**conf, "message.timeout.ms": 8000, "log_level": 0})
    p.produce(topic, value, key, partition=0, on_delivery=lambda e, _m: out.append(e))
    p.flush(15)
    assert out, "no delivery report"
    return out[0]


def _end_offsets(s, topic: str) -> dict[int, int]:
    c = Consumer({**s.kafka(), "group.id": "security-watermarks", "log_level": 0})
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in md.partitions}
    finally:
        c.close()


DENIED_READ = (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED)


def _read_error(conf: dict, topic: str, timeout: float = 15.0) -> KafkaError | None:
    """The first authorization error (topic or group) reading ``topic``; None once a record was read."""
    errors: list[KafkaError] = []
    c = Consumer({**conf, "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "error_cb": errors.append, "log_level": 0})
    try:
        c.subscribe([topic])  # (assign() leaves a denied topic's metadata error unreported)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error():
                errors.append(m.error())
            elif m is not None:
                return None
            authz = [e for e in errors if e.code() in DENIED_READ]
            if authz:
                return authz[0]
        raise AssertionError(f"neither a record nor an authorization error in {timeout}s: {errors[:3]}")
    finally:
        c.close()


# ---------------------------------------------------------------- 1. no anonymous super user

def test_controller_listener_answers_no_unauthenticated_admin_request(secure_stack):
    """Attack 1: with no credentials, DescribeAcls and CreateAcls straight to the controller port
    (which the anonymous super user used to answer). The broker closes the connection unanswered,
    and no ACL appears. Control: the same socket code gets an answer to ApiVersions (allowed
    before authentication), so a closed connection is the refusal, not a broken request."""
    info, s = secure_stack
    host, port = _host_port(s.kafka_bootstrap)
    cport = port + 1
    admin = AdminClient(s.kafka())
    before = _all_acls(admin)

    control = wire.exchange(host, cport, wire.api_versions())
    assert control is not None and wire.correlation_id(control) == 7
    assert wire.exchange(host, cport, wire.describe_all_acls()) is None
    victim = f"tenant.{_tenant()}.events"
    assert wire.exchange(host, cport, wire.create_read_acl(victim, "User:attacker")) is None
    # The client listener too: no request before SASL.
    assert wire.exchange(host, port, wire.create_read_acl(victim, "User:attacker")) is None

    assert _all_acls(admin) == before
    assert not any("attacker" in a for a in _all_acls(admin))


def test_broker_properties_grant_nothing_to_anonymous(secure_stack):
    """The properties the broker runs with: every listener authenticates, ANONYMOUS is no super
    user, the controller binds to loopback, and sessions must re-authenticate."""
    _, s = secure_stack
    props = LocalKafka(s).server_properties()
    kv = dict(line.split("=", 1) for line in props.splitlines() if "=" in line)
    assert "ANONYMOUS" not in kv["super.users"]
    assert set(kv["super.users"].split(";")) == {f"User:{s.kafka_username}", "User:broker", "User:controller"}
    assert "PLAINTEXT" not in [p.split(":")[1] for p in kv["listener.security.protocol.map"].split(",")]
    assert all(l.split("://")[1].startswith("127.0.0.1:") for l in kv["listeners"].split(","))
    assert kv["allow.everyone.if.no.acl.found"] == "false"
    assert int(kv["connections.max.reauth.ms"]) == s.kafka_reauth_ms


def test_no_credentials_reach_nothing_on_the_client_listener(secure_stack):
    """A plain client without SASL on the client port gets no metadata at all."""
    _, s = secure_stack
    c = Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": "anon", "log_level": 0,
                  "socket.timeout.ms": 3000})
    try:
        with pytest.raises(KafkaException):
            c.list_topics(timeout=5)
    finally:
        c.close()


# ---------------------------------------------------------------- 2. producers bound to their tenant

def test_tenant_producer_writes_only_its_own_raw_topic(tenants):
    """Attack 2: A's producer credential tries B's raw topic, the shared events.raw, B's clean
    topic, privacy.requests, the audit trail and the DLQ. Each is refused by the broker and no
    record lands; control: A's own raw topic takes the record."""
    s, _, a, b, creds = tenants
    conf = sasl_config(s.kafka_bootstrap, creds[a]["producer"]["username"], creds[a]["producer"]["password"])
    assert creds[a]["producer"]["topic"] == s.tenant_raw_topic(a)
    targets = [s.tenant_raw_topic(b), s.raw_topic, s.tenant_topic(b), s.tenant_topic(a), s.requests_topic,
               s.audit_topic, s.dlq_topic, s.quarantine_topic]
    before = {t: _end_offsets(s, t) for t in targets}
    for topic in targets:
        err = _produce_error(conf, topic, key=f"{b}/u1".encode())
        assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, (topic, err)
    assert {t: _end_offsets(s, t) for t in targets} == before
    own_before = _end_offsets(s, s.tenant_raw_topic(a))
    assert _produce_error(conf, s.tenant_raw_topic(a), key=f"{a}/u1".encode()) is None
    assert sum(_end_offsets(s, s.tenant_raw_topic(a)).values()) == sum(own_before.values()) + 1


def test_tenant_producer_reads_no_raw_topic_and_gets_no_transactions(tenants):
    """A producer credential reads nothing (not even its own raw topic) and may not open a
    transaction (no transactional-id rights)."""
    s, _, a, _, creds = tenants
    conf = sasl_config(s.kafka_bootstrap, creds[a]["producer"]["username"], creds[a]["producer"]["password"])
    # Control: the pipeline's user reads A's raw topic (one record is there).
    assert _produce_error(s.kafka(), s.tenant_raw_topic(a)) is None
    assert _read_error({**s.kafka(), "group.id": "pipeline-control"}, s.tenant_raw_topic(a)) is None
    for topic in (s.tenant_raw_topic(a), s.raw_topic):
        # librdkafka asks the group coordinator first, which refuses a principal without group
        # rights; the ACLs below show the topic would refuse the fetch as well.
        err = _read_error({**conf, "group.id": f"tenant.{a}.x"}, topic)
        assert err is not None and err.code() in DENIED_READ, topic
    acls = {acl for acl in _all_acls(AdminClient(s.kafka())) if acl.startswith(f"User:producer-{a} ")}
    assert acls == {f"User:producer-{a} WRITE TOPIC {s.tenant_raw_topic(a)}",
                    f"User:producer-{a} DESCRIBE TOPIC {s.tenant_raw_topic(a)}"}
    p = Producer({**conf, "transactional.id": f"{a}-tx", "log_level": 0})
    with pytest.raises(KafkaException) as exc:
        p.init_transactions(15)
    assert exc.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED


def test_tenant_consumer_cannot_write_privacy_requests_or_read_raw(tenants):
    """A tenant's consumer credential files no privacy request (only the privacy officer and the
    pipeline may), and reads no raw topic, its own included."""
    s, _, a, _, creds = tenants
    conf = sasl_config(s.kafka_bootstrap, creds[a]["kafka"]["username"], creds[a]["kafka"]["password"])
    before = _end_offsets(s, s.requests_topic)
    err = _produce_error(conf, s.requests_topic, value=b'{"type":"erase"}', key=f"{a}/u1".encode())
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert _end_offsets(s, s.requests_topic) == before
    assert _produce_error(s.kafka(), s.tenant_raw_topic(a)) is None  # something to read, were it allowed
    for topic in (s.tenant_raw_topic(a), s.raw_topic):
        err = _read_error({**conf, "group.id": f"tenant.{a}.r"}, topic)
        assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, topic


def test_delete_removes_the_producer_principal(tenants):
    s, svc, a, b, creds = tenants
    receipt = svc.delete(a)
    assert "producer_user" in [st["step"] for st in receipt["steps"]]
    admin = AdminClient(s.kafka())
    assert not any(f"producer-{a}" in acl for acl in _all_acls(admin))
    conf = sasl_config(s.kafka_bootstrap, creds[a]["producer"]["username"], creds[a]["producer"]["password"])
    c = Consumer({**conf, "group.id": "x", "log_level": 0})
    try:
        with pytest.raises(KafkaException):
            c.list_topics(timeout=5)
    finally:
        c.close()
    assert svc.describe(b)["producer_user"]["exists"]  # B untouched
