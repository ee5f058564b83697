"""``streams.connections``: every client of the package is built there, with the documented timeouts.

No client connects here: redis-py and librdkafka open connections on first use, and the tests only
read the configurations the clients were given.
"""

from __future__ import annotations

import ast
import logging
import re
from pathlib import Path

import pytest

from streams import connections as conn
from streams.connections import REDIS_TIMEOUTS, Purpose, RedisTimeouts
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2] / "streams"

SECURE = Settings(kafka_bootstrap="b1:9092,b2:9092", kafka_security="SASL_PLAINTEXT", kafka_username="pipe",
                  kafka_password="pw", redis_url="redis://127.0.0.1:6399/2")


def _timeouts(client) -> tuple[float, float]:
    kw = client.connection_pool.connection_kwargs
    return kw["socket_timeout"], kw["socket_connect_timeout"]


def test_every_purpose_has_its_timeouts():
    assert set(REDIS_TIMEOUTS) == set(Purpose)
    # The numbers REDIS_TIMEOUTS' comments explain: changing one is a behaviour change.
    assert REDIS_TIMEOUTS == {Purpose.WORKER: RedisTimeouts(5.0, 5.0), Purpose.CLI: RedisTimeouts(5.0, 5.0),
                              Purpose.ADMIN: RedisTimeouts(10.0, 5.0), Purpose.KEY_ROTATION: RedisTimeouts(30.0, 5.0)}


def test_the_readme_table_gives_every_purposes_timeout():
    readme = (ROOT.parent / "README.md").read_text()
    rows = dict(re.findall(r"^\| `([A-Z_]+)` \| ([0-9.]+) s \|", readme, re.M))
    assert rows == {p.name: f"{REDIS_TIMEOUTS[p].command:g}" for p in Purpose}


@pytest.mark.parametrize("purpose", list(Purpose))
def test_a_redis_client_has_its_purposes_timeouts_and_the_settings_url(purpose):
    client = conn.redis_client(SECURE, purpose)
    t = REDIS_TIMEOUTS[purpose]
    assert _timeouts(client) == (t.command, t.connect)
    kw = client.connection_pool.connection_kwargs
    assert (kw["host"], kw["port"], kw["db"]) == ("127.0.0.1", 6399, 2)
    assert not kw.get("decode_responses")
    assert conn.redis_client(SECURE, purpose, decode_responses=True).connection_pool.connection_kwargs[
        "decode_responses"]


def _purposes_used() -> dict[str, set[str]]:
    """Module -> the purposes its ``redis_client``/``StoreReader.from_settings`` calls name."""
    out: dict[str, set[str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("redis_client", "StoreReader.from_settings"):
                args = [ast.unparse(a) for a in node.args[1:2]] or ["Purpose.CLI"]  # the reader's default
                out.setdefault(module, set()).update(args)
    return out


def test_the_worker_uses_the_worker_timeouts_and_the_cli_does_not():
    used = _purposes_used()
    for module in ("streams.runtime", "streams.app", "streams.api.service"):
        assert used[module] == {"Purpose.WORKER"}, module
    assert _timeouts(conn.async_redis_client(SECURE)) == (5.0, 5.0)  # the store writer's
    for module, purposes in used.items():
        if module.startswith("streams.cli.") or module.startswith("streams.tenancy."):
            assert "Purpose.WORKER" not in purposes, module
    assert used["streams.cli.keys"] == {"Purpose.KEY_ROTATION"}
    assert used["streams.tenancy.onboarding"] == used["streams.api.control"] == {"Purpose.ADMIN"}


def test_the_store_reader_answers_str():
    from streams.sinks.store import StoreReader

    reader = StoreReader.from_settings(SECURE)
    kw = reader._r.connection_pool.connection_kwargs
    assert kw["decode_responses"] and (kw["socket_timeout"], kw["socket_connect_timeout"]) == (5.0, 5.0)


def test_a_probe_waits_as_long_as_it_is_told():
    assert _timeouts(conn.redis_probe_client(SECURE, 1.5)) == (1.5, 1.5)
    with pytest.raises(ValueError):
        conn.redis_probe_client(Settings(redis_url="nonsense://x"), 1.0)


def test_kafka_configs_carry_the_connection_and_each_kinds_defaults():
    target = SECURE.kafka()
    assert conn.client_config("h:1") == {"bootstrap.servers": "h:1"}
    assert conn.client_config(target, {"x": 1}) == {**target, "x": 1}
    producer = conn.producer_config(target, {"linger.ms": 0})
    assert producer["sasl.username"] == "pipe" and producer["enable.idempotence"] is True
    assert producer["partitioner"] == "murmur2_random" and producer["linger.ms"] == 0
    requests = conn.request_producer_config(target)
    assert requests["acks"] == "all" and "enable.idempotence" not in requests
    consumer = conn.consumer_config(target, "g", {"auto.offset.reset": "earliest"})
    assert consumer["group.id"] == "g" and consumer["enable.auto.commit"] is False
    assert consumer["security.protocol"] == "SASL_PLAINTEXT" and consumer["auto.offset.reset"] == "earliest"
    admin = conn.admin_config(target)
    assert admin["bootstrap.servers"] == "b1:9092,b2:9092"
    assert admin["logger"] is logging.getLogger("streams.kafka.admin")
    quiet = logging.getLogger("quiet")
    assert conn.consumer_config(target, "g", {"logger": quiet})["logger"] is quiet  # a caller's key wins


def test_aiokafka_gets_the_same_connection():
    assert conn.aiokafka_connection(Settings(kafka_bootstrap="a:1,b:2")) == {"bootstrap_servers": ["a:1", "b:2"]}
    kw = conn.aiokafka_connection(SECURE)
    assert kw["sasl_plain_username"] == "pipe" and kw["sasl_plain_password"] == "pw"
    assert kw["security_protocol"] == SECURE.kafka()["security.protocol"]
    assert kw["sasl_mechanism"] == SECURE.kafka()["sasl.mechanism"]


def test_faust_gets_the_same_connection():
    plain = conn.faust_broker(Settings(kafka_bootstrap="a:1, b:2"))
    assert plain == {"broker": ["kafka://a:1", "kafka://b:2"], "broker_credentials": None}
    creds = conn.faust_broker(SECURE)["broker_credentials"]
    assert (creds.username, creds.password) == ("pipe", "pw")
    assert creds.mechanism.value == SECURE.kafka()["sasl.mechanism"]


def _calls_outside_connections(pattern: re.Pattern[str]) -> list[str]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        if path == ROOT / "connections.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and pattern.search(ast.unparse(node.func)):
                found.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}")
    return found


def test_no_redis_client_is_built_outside_the_connections_module():
    # Redis.from_url, redis.Redis(...), StrictRedis, redis.asyncio's: all go through streams.connections.
    found = _calls_outside_connections(re.compile(r"(^|\.)(Strict)?Redis(\.from_url)?$|(^|\.)from_url$"))
    assert not found, f"Redis clients built outside streams/connections.py: {found}"


def test_the_check_finds_a_client_built_elsewhere():
    pattern = re.compile(r"(^|\.)(Strict)?Redis(\.from_url)?$|(^|\.)from_url$")
    for src in ("redis.Redis.from_url(u)", "aioredis.Redis.from_url(u)", "redis.Redis(host='h')", "Redis.from_url(u)"):
        call = ast.parse(src).body[0].value
        assert pattern.search(ast.unparse(call.func)), src
    assert not pattern.search(ast.unparse(ast.parse("StoreReader.from_settings(s)").body[0].value.func))
