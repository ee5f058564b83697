"""Attacks with a tenant's own Redis user, and with sessions opened before a rotation.

- Attack 7: a tenant's Redis user ran DBSIZE (and other +@read commands that ignore key
  patterns) to watch other tenants' volume, and could run multi-key set algebra that stalls
  the shared Redis. It now has an allowlist of key-scoped reads, each of bounded cost: no range
  reads or multi-key commands, whose one call grows with the tenant's data (issue 9).
- Attack 4: after `rotate-credentials`, a consumer connected with the old password kept
  reading. The broker now makes every session re-authenticate (connections.max.reauth.ms)
  and rotation kills the Redis user's open connections.
"""

from __future__ import annotations

import time
import uuid

import pytest
import redis
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from streams.settings import sasl_config
from streams.sinks import store_keys as K
from streams.tenancy.onboarding import TENANT_REDIS_COMMANDS, build_service

pytestmark = [pytest.mark.integration, pytest.mark.security]


@pytest.fixture
def tenant(make_secure_settings):
    s = make_secure_settings()
    svc = build_service(s, "test:security")
    a, b = f"t{uuid.uuid4().hex[:8]}", f"t{uuid.uuid4().hex[:8]}"
    creds = {t: svc.create(t)["credentials"] for t in (a, b)}
    return s, svc, a, b, creds


def _redis_as(s, user: str, password: str, **kw) -> redis.Redis:
    url = redis.connection.parse_url(s.redis_url)
    return redis.Redis(host=url["host"], port=url["port"], username=user, password=password, **kw)


# Commands of +@read (or harmless-looking ones) that ignore key patterns, reveal other tenants'
# volume, or can run for seconds on the shared Redis; (command, args) with the tenant's own keys.
def _denied(a: str) -> list[tuple[str, ...]]:
    idx, doc = f"{K.store_prefix(a)}time", f"{K.store_prefix(a)}ev:1"
    return [
        ("DBSIZE",), ("INFO",), ("INFO", "keyspace"), ("SCAN", "0"), ("KEYS", "*"), ("RANDOMKEY",),
        ("ZUNION", "2", idx, idx), ("ZINTER", "2", idx, idx), ("ZDIFF", "2", idx, idx),
        ("ZUNIONSTORE", f"{K.store_prefix(a)}x", "1", idx), ("SUNION", idx), ("SINTER", idx),
        ("SORT", idx), ("SORT_RO", idx), ("OBJECT", "ENCODING", doc), ("DEBUG", "OBJECT", doc),
        ("MEMORY", "USAGE", doc), ("CLIENT", "LIST"), ("MONITOR",), ("CONFIG", "GET", "*"),
        ("EVAL", "return redis.call('DBSIZE')", "0"), ("FUNCTION", "LIST"), ("LATENCY", "LATEST"),
        ("SLOWLOG", "GET"), ("LASTSAVE",), ("ACL", "LIST"), ("PUBLISH", "c", "x"), ("SET", doc, "x"),
        ("DEL", doc), ("FLUSHALL",), ("SUBSCRIBE", "c"),
    ]


def test_tenant_redis_user_runs_only_bounded_key_scoped_reads(tenant):
    """Each denied command gets NOPERM and the data is as before; control: the allowlisted reads
    of its own keys answer."""
    s, _, a, b, creds = tenant
    admin = redis.Redis.from_url(s.redis_url)
    admin.set(f"{K.store_prefix(a)}ev:1", b"{}")
    admin.zadd(f"{K.store_prefix(a)}time", {"1": 1, "2": 2})
    admin.set(f"{K.store_prefix(b)}ev:1", b"{}")
    before = (admin.dbsize(), admin.get(f"{K.store_prefix(a)}ev:1"), admin.zcard(f"{K.store_prefix(a)}time"))
    user = creds[a]["redis"]
    ra = _redis_as(s, user["username"], user["password"])
    # Control: the read path works.
    assert ra.get(f"{K.store_prefix(a)}ev:1") == b"{}"
    assert ra.zcard(f"{K.store_prefix(a)}time") == 2
    assert ra.zscore(f"{K.store_prefix(a)}time", "2") == 2.0
    denied = _denied(a)
    for cmd in denied:
        conn = _redis_as(s, user["username"], user["password"], single_connection_client=True)
        with pytest.raises(redis.exceptions.ResponseError) as refused:
            conn.execute_command(*cmd)
        # DEBUG is also off server-wide (enable-debug-command no), which answers first.
        assert isinstance(refused.value, redis.exceptions.NoPermissionError) or cmd[0] == "DEBUG", (cmd, refused.value)
        conn.close()
    assert (admin.dbsize(), admin.get(f"{K.store_prefix(a)}ev:1"), admin.zcard(f"{K.store_prefix(a)}time")) == before
    # The user's rules are exactly the allowlist (a "+@read minus a few" would list categories).
    rules = admin.acl_getuser(user["username"])
    assert rules["categories"] == ["-@all"] and rules["keys"] == [f"~{K.store_prefix(a)}*"]
    assert set(rules["commands"]) == {f"+{c}" for c in TENANT_REDIS_COMMANDS}


# A tenant's reads whose cost grows with its own data or with the arguments it sends: one call holds
# Redis' single thread until it is done, so they stalled the pipeline's calls (issue 9, measured by
# bench/tenant_redis_bench.py). (command, args) on the tenant's own index and documents.
def _unbounded(a: str) -> list[tuple[str, ...]]:
    idx, docs = f"{K.store_prefix(a)}time", [f"{K.store_prefix(a)}ev:{i}" for i in range(3)]
    return [
        ("ZRANGE", idx, "0", "-1"), ("ZRANGE", idx, "-inf", "+inf", "BYSCORE"),
        ("ZRANGE", idx, "-inf", "+inf", "BYSCORE", "LIMIT", "0", "10"),  # a bounded use is refused too
        ("ZRANGEBYSCORE", idx, "-inf", "+inf"), ("ZREVRANGE", idx, "0", "-1"),
        ("ZREVRANGEBYSCORE", idx, "+inf", "-inf"), ("ZRANGEBYLEX", idx, "-", "+"), ("ZRANDMEMBER", idx, "-100"),
        ("ZSCAN", idx, "0"), ("MGET", *docs), ("EXISTS", *docs), ("ZMSCORE", idx, "1", "2"),
        ("GETRANGE", docs[0], "0", "-1"), ("DUMP", docs[0]),
    ]


def test_tenant_redis_user_cannot_run_reads_whose_cost_grows_with_its_data(tenant):
    """Attack: the tenant asks its own huge index for everything at once (ZRANGE 0 -1, MGET of every
    document...). Each such command gets NOPERM on the real Redis; control: the bounded reads of the
    same keys answer, also many of them pipelined (Redis serves other clients between them)."""
    s, _, a, _, creds = tenant
    admin = redis.Redis.from_url(s.redis_url)
    idx = f"{K.store_prefix(a)}time"
    admin.zadd(idx, {str(i): i for i in range(1000)})
    for i in range(3):
        admin.set(f"{K.store_prefix(a)}ev:{i}", b'{"n": %d}' % i)
    user = creds[a]["redis"]
    ra = _redis_as(s, user["username"], user["password"])
    pipe = ra.pipeline(transaction=False)
    for i in range(3):
        pipe.get(f"{K.store_prefix(a)}ev:{i}")
    assert pipe.execute() == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']
    assert ra.zcount(idx, "-inf", "+inf") == 1000 and ra.zrank(idx, "10") == 10 and ra.zscore(idx, "7") == 7.0
    for cmd in _unbounded(a):
        with pytest.raises(redis.exceptions.NoPermissionError):
            ra.execute_command(*cmd)
    assert not {c.lower() for c, *_ in _unbounded(a)} & set(TENANT_REDIS_COMMANDS)


def test_a_tenant_user_made_with_the_earlier_allowlist_is_repaired_by_create(tenant):
    """Users onboarded before the allowlist was narrowed kept ZRANGE and MGET: re-running `tenants create`
    (which repairs an onboarded tenant's Redis rules) takes them away, and the password still works."""
    s, svc, a, _, creds = tenant
    admin = redis.Redis.from_url(s.redis_url)
    user = creds[a]["redis"]
    admin.execute_command("ACL", "SETUSER", user["username"], "+zrange", "+mget")  # as the earlier rules had it
    ra = _redis_as(s, user["username"], user["password"])
    idx = f"{K.store_prefix(a)}time"
    admin.zadd(idx, {"1": 1})
    assert ra.zrange(idx, 0, -1) == [b"1"]  # control: the old rules allow it
    svc.create(a)
    with pytest.raises(redis.exceptions.NoPermissionError):
        ra.zrange(idx, 0, -1)
    with pytest.raises(redis.exceptions.NoPermissionError):
        ra.mget([f"{K.store_prefix(a)}ev:1"])
    assert ra.zcard(idx) == 1


def test_rotation_ends_an_open_redis_session(tenant):
    s, svc, a, _, creds = tenant
    user = creds[a]["redis"]
    open_conn = _redis_as(s, user["username"], user["password"], single_connection_client=True)
    assert open_conn.ping()  # control: the session works before the rotation
    svc.rotate_credentials(a)
    with pytest.raises(redis.exceptions.ConnectionError):  # killed; reconnecting with the old password fails
        open_conn.ping()


def test_rotation_ends_an_open_kafka_session(tenant):
    """A consumer connected before the rotation reads no record published after it: within
    connections.max.reauth.ms its session must authenticate again, with a password that no longer
    works. Control: it read the record published before, and the new credential reads both."""
    s, svc, a, _, creds = tenant
    old = sasl_config(s.kafka_bootstrap, creds[a]["kafka"]["username"], creds[a]["kafka"]["password"])
    admin = Producer(s.kafka())
    admin.produce(s.tenant_topic(a), b"before", b"s/1", partition=0)
    assert admin.flush(15) == 0
    errors: list[KafkaError] = []
    # No auto-commit: closing would otherwise wait ~45 s to commit with a credential that no longer works.
    c = Consumer({**old, "group.id": f"tenant.{a}.open", "auto.offset.reset": "earliest", "log_level": 0,
                  "enable.auto.commit": False, "error_cb": errors.append})
    c.assign([TopicPartition(s.tenant_topic(a), 0, 0)])  # no group join: the session is what is tested
    try:
        seen = _poll_values(c, 30, until=b"before")
        assert b"before" in seen
        new = svc.rotate_credentials(a)["credentials"]["kafka"]
        time.sleep(s.kafka_reauth_ms / 1000 + 2)
        admin.produce(s.tenant_topic(a), b"after", b"s/1", partition=0)
        assert admin.flush(15) == 0
        assert b"after" not in _poll_values(c, 10, until=b"after")
        assert any(e.code() in (KafkaError._AUTHENTICATION, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN)
                   for e in errors), errors[:5]
    finally:
        c.close()
    fresh = Consumer({**sasl_config(s.kafka_bootstrap, new["username"], new["password"]),
                      "group.id": f"tenant.{a}.new", "auto.offset.reset": "earliest", "log_level": 0})
    fresh.assign([TopicPartition(s.tenant_topic(a), 0, 0)])
    try:
        assert {b"before", b"after"} <= set(_poll_values(fresh, 30, until=b"after"))
    finally:
        fresh.close()


def _poll_values(c: Consumer, seconds: float, until: bytes) -> list[bytes]:
    out: list[bytes] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and until not in out:
        m = c.poll(0.5)
        if m is not None and not m.error():
            out.append(m.value())
    return out
