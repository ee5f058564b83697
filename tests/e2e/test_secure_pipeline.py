"""The whole path on the secure stack, as an operator and a tenant live it.

The broker requires SASL/SCRAM and ACLs, Redis requires a user. The operator onboards a
tenant with `streams tenants create` while a worker runs (the worker authenticates as
the pipeline's user and learns of the tenant from the registry, no restart); a producer
publishes; the tenant reads its clean stream with nothing but its own Kafka credentials,
its store keyspace with its own Redis user, and the HTTP API with its own API key.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import fastavro
import pytest
import redis
from confluent_kafka import Consumer

from streams.ingest import samples
from streams.ingest.producer import EventProducer
from streams.settings import sasl_config
from streams.schema.registry import SchemaRegistry
from streams.sinks import store_keys as K
from tests.conftest import settings_env
from tests.e2e.test_api_http import free_port

pytestmark = pytest.mark.e2e


def _cli(s, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams.cli.main", *args], env=settings_env(s),
                          capture_output=True, text=True, timeout=120)


def _get(port: int, path: str, token: str) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_onboard_publish_and_read_with_tenant_credentials_only(make_secure_settings, start_worker, secure_stack):
    port = free_port()
    s = make_secure_settings(web_enabled=True, web_port=port)
    worker = start_worker(s)  # knows no tenant yet
    tenant = f"sec{int(time.time() * 1000) % 10**8}"

    r = _cli(s, "tenants", "create", tenant, "--roles", "reader")
    assert r.returncode == 0, r.stderr
    assert "shown once" in r.stderr
    created = json.loads(r.stdout)
    creds = created["credentials"]
    assert created["status"] == "created" and set(creds) == {"kafka", "producer", "redis", "api_keys"}
    # The secrets (Kafka and Redis passwords, API key tokens and their secret parts) are in the answer
    # and nowhere in what the operator's terminal logged besides it; the end of the test searches
    # the worker's, broker's and Redis' logs and every Redis key and value for them too.
    secrets = [creds["kafka"]["password"], creds["producer"]["password"], creds["redis"]["password"]]
    for k in creds["api_keys"]:
        secrets += [k["token"], k["token"].split("_", 2)[2]]
    assert len(secrets) == 5 and all(len(x) >= 12 for x in secrets)
    for secret in secrets:
        assert secret in r.stdout
        assert secret not in r.stderr

    # The worker re-reads the tenant registry every 2 s: its API answers the tenant's key once it has.
    token = creds["api_keys"][0]["token"]
    deadline = time.monotonic() + 30
    while _get(port, f"/v1/tenants/{tenant}/counts", token)[0] != 200:
        assert time.monotonic() < deadline, "the worker did not learn of the onboarded tenant"
        time.sleep(0.5)

    registry = SchemaRegistry.load_dir(s.schemas_dir)
    events = [samples.signup(tenant, "s-1"), samples.order(tenant, "s-1"), samples.support(tenant, "s-2")]
    # The tenant's producer, with its own credential, on its own raw topic (the only one it may write).
    assert creds["producer"]["topic"] == s.tenant_raw_topic(tenant)
    producer = EventProducer(sasl_config(s.kafka_bootstrap, creds["producer"]["username"],
                                         creds["producer"]["password"]), creds["producer"]["topic"], registry)
    for e in events:
        producer.send(e)
    producer.flush()
    deadline = time.monotonic() + 60
    while _get(port, f"/v1/tenants/{tenant}/counts", token)[1].get("count") != len(events):
        assert time.monotonic() < deadline, worker.log_text()[-3000:]
        time.sleep(0.5)

    # Kafka: the tenant's own credentials and group, nothing of the project but schemas/clean/.
    conf = sasl_config(s.kafka_bootstrap, creds["kafka"]["username"], creds["kafka"]["password"])
    c = Consumer({**conf, "group.id": f"tenant.{tenant}.e2e", "auto.offset.reset": "earliest", "log_level": 0})
    c.subscribe([s.tenant_topic(tenant)])
    clean = {e.fingerprint: e for e in SchemaRegistry.load_dir(s.schemas_dir / "clean")}
    seen: set[str] = set()
    end = time.monotonic() + 60
    try:
        while time.monotonic() < end and not {e["event_id"] for e in events} <= seen:
            m = c.poll(0.5)
            if m is None or m.error() or m.value() is None:
                assert m is None or not m.error(), m.error()
                continue
            entry = clean[m.value()[2:10]]
            doc = fastavro.schemaless_reader(io.BytesIO(m.value()[10:]), entry.parsed, None)
            seen.add(str(doc["event_id"]))
            assert "@" not in json.dumps(doc, default=str)  # emails are tokens or masks
    finally:
        c.close()
    assert {e["event_id"] for e in events} <= seen

    # Redis: the tenant's ACL user reads its own documents.
    url = redis.connection.parse_url(s.redis_url)
    mine = redis.Redis(host=url["host"], port=url["port"], username=creds["redis"]["username"],
                       password=creds["redis"]["password"])
    assert mine.get(f"{K.store_prefix(tenant)}ev:{events[0]['event_id']}") is not None

    # HTTP: the tenant's reader key.
    status, body = _get(port, f"/v1/tenants/{tenant}/subjects/s-1/events", token)
    assert status == 200
    assert {e["event_id"] for e in body["events"]} == {events[0]["event_id"], events[1]["event_id"]}

    # Secrets nowhere: not in the worker's log, the broker's or Redis' logs, or any Redis key or value
    # (the search finds the API key's hash, which is what Redis keeps).
    import hashlib

    from tests.disk_search import find, redis_values

    stack_info, _ = secure_stack
    logs = {"worker.log": worker.log_path.read_bytes(), **{str(f): f.read_bytes() for f in stack_info.log_files if f.is_file()}}
    assert logs["worker.log"] and len(logs) >= 2
    values = redis_values(redis.Redis.from_url(s.redis_url))
    api_secret = creds["api_keys"][0]["token"].split("_", 2)[2]
    assert find([hashlib.sha256(api_secret.encode()).hexdigest().encode()], values), "the search misses the key's hash"
    assert find([x.encode() for x in secrets], {**logs, **values}) == []
