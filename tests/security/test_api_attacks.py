"""Attacks on the worker's HTTP server with plain clients (urllib, http.client), on the secure stack.

Issue 8, HTTP side. Each test names the attack, makes it as an attacker would
(only HTTP and what the attacker holds: an operator key, a tenant's reader key,
another tenant's key, a revoked key, or nothing), asserts the refusal, and
asserts that nothing changed behind it: no API key or password made in Redis,
no record on the privacy requests topic, no metrics in the answer.

One worker serves the module (starting one costs ~15 s of the shared cores);
the tests use disjoint tenants or subjects so their order does not matter. The
TLS test starts its own worker with a self-signed certificate.
"""

from __future__ import annotations

import dataclasses
import datetime
import http.client
import ipaddress
import json
import random
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest
import redis
from confluent_kafka import Consumer

from streams.api.api_keys import ApiKeyStore, Role
from streams.audit.log import read_all
from streams.connections import client_config
from streams.ingest import samples
from streams.ingest.producer import EventProducer
from streams.keyspace import API_KEY_PREFIX, api_tenant_set_key
from streams.ops.topics import ensure_topics
from streams.schema.registry import SchemaRegistry
from streams.tenancy.onboarding import build_service
from streams.tenancy.registry import principal_names
from tests.conftest import WorkerProcess, settings_env
from tests.e2e.test_api_http import call, free_port, wait_until
from tests.kafka_read import read_topic

pytestmark = [pytest.mark.e2e, pytest.mark.security]

TOKEN_RE = re.compile(r"stk_[0-9a-f]{12}_")

# Faust's own pages (faust.web.base: DEFAULT, PRODUCTION, DEBUG and OPTIONAL blueprints) and some of their
# sub-pages: none may answer.
FAUST_PAGES = ["/", "/router/", "/router", "/router/some-table/get/", "/table/", "/table", "/table/some-table/",
               "/graph/", "/stats/", "/assignment/", "/performance/"]


def _end_offsets(s: Any, topic: str) -> int:
    """The sum of the topic's high watermarks: how many records were ever written to it."""
    c = Consumer({**client_config(s.kafka()), "group.id": f"test-wm-{uuid.uuid4().hex[:6]}", "log_level": 0})
    try:
        parts = c.list_topics(topic, timeout=30).topics[topic].partitions
        from confluent_kafka import TopicPartition
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in parts)
    finally:
        c.close()


def _audit(s: Any) -> list[dict[str, Any]]:
    return [rec for _, rec in read_all(s.kafka(), s.audit_topic) if rec]


@pytest.fixture(scope="module")
def env(secure_stack, tmp_path_factory) -> Iterator[SimpleNamespace]:
    """A worker (web server on, default host) on the secure stack; tenants a (reader, detokenizer, privacy keys)
    and b (reader, privacy keys) onboarded as `streams tenants create` does; an operator key; events in the store."""
    _, base = secure_stack
    tmp = tmp_path_factory.mktemp("security-api")
    run = uuid.uuid4().hex[:8]
    s = dataclasses.replace(
        base, raw_topic=f"events.raw.{run}", dlq_topic=f"events.dlq.{run}", app_id=f"streams-test-{run}",
        requests_topic=f"privacy.requests.{run}", audit_topic=f"audit.{run}", tenants=frozenset(),
        data_dir=tmp / "worker", master_key_file=tmp / "keys" / "master.key", web_enabled=True,
        web_port=free_port(), batch_within=0.01)
    assert s.web_host == "127.0.0.1"  # the default: nothing set it
    ensure_topics(s)
    a, b = f"sa{run[:6]}", f"sb{run[:6]}"
    svc = build_service(s, "test:setup")
    tokens: dict[str, str] = {}
    key_ids: dict[str, str] = {}
    for tenant, roles in ((a, ["reader", "detokenizer", "privacy"]), (b, ["reader", "privacy"])):
        created = svc.create(tenant, "opt_out", roles)
        assert created["status"] == "created"
        for k in created["credentials"]["api_keys"]:
            name = f"{'a' if tenant == a else 'b'}_{k['role']}"
            tokens[name], key_ids[name] = k["token"], k["key_id"]
    r = redis.Redis.from_url(s.redis_url)
    keys = ApiKeyStore(r)
    key_ids["operator"], tokens["operator"] = keys.create(None, Role.OPERATOR, "attacker")

    registry = SchemaRegistry.load_dir(s.schemas_dir)
    rng = random.Random(8)
    events = [samples.signup(a, "u-1", rng, email="keep.me@example.com"), samples.order(a, "u-1", rng),
              samples.signup(a, "u-2", rng, email="erase.me@example.com"), samples.order(a, "u-2", rng),
              samples.signup(b, "u-1", rng)]
    producer = EventProducer(s.kafka(), s.raw_topic, registry)
    producer.send_many(events)
    producer.flush()

    worker = WorkerProcess(s, tmp / "worker.log")
    try:
        worker.wait_ready()
        base_url = f"http://127.0.0.1:{s.web_port}"
        wait_until(lambda: call(base_url, f"/v1/tenants/{a}/counts", tokens["a_reader"])[2].get("count") == 4
                   and call(base_url, f"/v1/tenants/{b}/counts", tokens["b_reader"])[2].get("count") == 1,
                   what="the events in the store, through the API")
        yield SimpleNamespace(s=s, a=a, b=b, base=base_url, tokens=tokens, key_ids=key_ids, r=r, keys=keys,
                              worker=worker)
    finally:
        worker.stop()
    assert worker.traceback_excerpt() is None, worker.traceback_excerpt()


# ---------------------------------------------------------------- operator mints tenant secrets

def _api_key_state(e: SimpleNamespace, tenant: str) -> tuple[set, int]:
    """The tenant's key ids, and how many API keys exist at all."""
    listed = {i.decode() for i in e.r.smembers(api_tenant_set_key(tenant))}
    return listed, sum(1 for _ in e.r.scan_iter(f"{API_KEY_PREFIX}*"))


def test_operator_rerunning_create_gets_no_secret_of_an_onboarded_tenant(env):
    """Attack: POST /v1/tenants on an existing tenant, asking for a role it lacks (b has no detokenizer key),
    after its Redis and Kafka users went missing: before, the answer held a new detokenizer key and passwords."""
    e = env
    op = e.tokens["operator"]
    kafka_user, redis_user = principal_names(e.b)
    svc = build_service(e.s, "test:breakage")
    e.r.execute_command("ACL", "DELUSER", redis_user)
    assert svc._delete_scram(kafka_user)
    keys_before, all_before = _api_key_state(e, e.b)

    status, _, body = call(e.base, "/v1/tenants", op, "POST",
                           {"name": e.b, "roles": ["reader", "detokenizer", "privacy"]})
    assert status == 200, body
    assert body["status"] == "exists" and body["credentials"] == {}
    text = json.dumps(body)
    assert not TOKEN_RE.search(text) and '"password"' not in text
    assert "apikeys create --tenant" in body["note"]
    steps = {st["step"]: st for st in body["steps"]}
    assert steps["api_keys"]["created"] == [] and steps["api_keys"]["not_made"] == ["detokenizer"]

    # Nothing was made that the attacker could use: no API key, no Kafka user, no Redis password.
    assert _api_key_state(e, e.b) == (keys_before, all_before)
    assert not svc._kafka_user_exists(kafka_user)
    user = e.r.acl_getuser(redis_user)
    assert user is not None and user["passwords"] == []  # the rules were repaired; nobody can log in as it

    # The same through the CLI (the same service).
    r = subprocess.run([sys.executable, "-m", "streams.cli.main", "tenants", "create", e.b, "--roles", "detokenizer"],
                       env=settings_env(e.s), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["status"] == "exists" and out["credentials"] == {} and "shown once" not in r.stderr
    assert not TOKEN_RE.search(r.stdout) and '"password"' not in r.stdout
    assert _api_key_state(e, e.b) == (keys_before, all_before)

    # Both re-runs are in the audit trail, with their actor, and no credential was made by either.
    reruns = [rec for rec in _audit(e.s) if rec["action"] == "tenant.create" and rec["tenant"] == e.b
              and rec["reason"] == "onboarding re-run"]
    assert [rec["actor"] for rec in reruns][:1] == [f"api:{e.key_ids['operator']}"] and len(reruns) == 2
    assert all(rec["details"]["new_credentials"] == "" for rec in reruns)

    # The operator's key still reads no tenant data.
    assert call(e.base, f"/v1/tenants/{e.b}/events", op)[0] == 403


# ---------------------------------------------------------------- anonymous reads of the web server

def _listening_addresses(port: int) -> list[str]:
    """Local addresses of the sockets listening on ``port`` (from /proc/net/tcp and tcp6)."""
    out = []
    for name, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr_hex, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:
                continue
            raw = bytes.fromhex(addr_hex)
            # /proc prints the address as 32-bit words in host (little-endian) order.
            words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            out.append(str(ipaddress.ip_address(words)))
    return out


def _non_loopback_ipv4() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            ip = sock.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def test_anonymous_reads_of_the_web_server(env):
    """Attack: read /metrics (every tenant's name and volume), Faust's /router and /table pages, from anywhere."""
    e = env
    port = e.s.web_port
    assert _listening_addresses(port) == ["127.0.0.1"]
    other = _non_loopback_ipv4()
    if other:  # from another interface of the machine, nothing answers
        with pytest.raises(OSError):
            socket.create_connection((other, port), timeout=3).close()

    tenants = (e.a, e.b)
    for token in (None, "nonsense", "stk_000000000000_" + "A" * 43):
        status, hdrs, body = call(e.base, "/metrics", token)
        assert status == 401, (token, body)
        text = json.dumps(body)
        assert "streams_" not in text and not any(t in text for t in tenants)
    for name in ("a_reader", "a_detokenizer", "a_privacy", "b_reader"):
        status, _, body = call(e.base, "/metrics", e.tokens[name])
        assert status == 403 and body["error"]["code"] == "forbidden", name
        assert "streams_" not in json.dumps(body)
    # The store answers before the batch that wrote it has counted its deliveries (counting comes after
    # the topic write): the operator's page is read until the counter is there.
    delivered = f'streams_events_delivered_total{{tenant="{e.a}"}}'
    wait_until(lambda: delivered in call(e.base, "/metrics", e.tokens["operator"])[2], what="the delivered counter")
    status, hdrs, text = call(e.base, "/metrics", e.tokens["operator"])
    assert status == 200 and delivered in text
    assert hdrs["Cache-Control"] == "no-store"

    for path in FAUST_PAGES:
        status, _, body = call(e.base, path)
        assert status == 404, (path, status, body)
        assert e.s.app_id not in str(body) and "table" not in str(body).lower(), path
    # What stays anonymous holds no data.
    assert call(e.base, "/health")[0] == 200 and call(e.base, "/openapi.json")[0] == 200

    # Denials are audited aggregated, by the worker's background flush (every STREAMS_API_DENIAL_AUDIT_WINDOW).
    wait_until(lambda: {rec["details"]["key_id"] for rec in _audit(e.s) if rec["action"] == "api.denied"
                        and rec["details"]["route"] == "metrics"} >= {e.key_ids[n] for n in ("a_reader", "b_reader")},
               timeout=e.s.api_denial_audit_window * 3 + 30, what="the metrics denials' records")


# ---------------------------------------------------------------- privacy requests over HTTP

def test_privacy_requests_only_by_the_tenants_privacy_key(env):
    """Attack: file an erasure of a's subject with a's reader or detokenizer key, b's privacy key, the operator
    key, no key. Then the tenant's privacy officer files it, and the subject's events are erased."""
    e = env
    path = f"/v1/tenants/{e.a}/privacy-requests"
    body = {"type": "erase", "subject": "u-2", "reason": "ticket 88"}
    filed_before = _end_offsets(e.s, e.s.requests_topic)

    for name in ("a_reader", "a_detokenizer", "b_privacy", "operator"):
        status, _, err = call(e.base, path, e.tokens[name], "POST", body)
        assert status == 403 and err["error"]["code"] == "forbidden", (name, err)
    assert call(e.base, path, None, "POST", body)[0] == 401
    # Another tenant's key: the same answer whether the tenant exists or not.
    _, _, here = call(e.base, path, e.tokens["b_privacy"], "POST", body)
    _, _, nowhere = call(e.base, "/v1/tenants/no-such-tenant/privacy-requests", e.tokens["b_privacy"], "POST", body)
    assert here == nowhere
    assert _end_offsets(e.s, e.s.requests_topic) == filed_before  # nothing was filed
    assert call(e.base, f"/v1/tenants/{e.a}/subjects/u-2/events", e.tokens["a_reader"])[2]["paging"]["returned"] == 2

    # A privacy key reads no events.
    assert call(e.base, f"/v1/tenants/{e.a}/events", e.tokens["a_privacy"])[0] == 403

    status, hdrs, filed = call(e.base, path, e.tokens["a_privacy"], "POST", body)
    assert status == 202, filed
    rid, actor = filed["request_id"], f"api:{e.key_ids['a_privacy']}"
    assert filed["filed_by"] == actor and hdrs["Location"] == f"{path}/{rid}"
    (msg,) = [m for m in read_topic(e.s.kafka(), e.s.requests_topic, expect=1, timeout=30)
              if json.loads(m.value())["request_id"] == rid]
    assert msg.key() == f"{e.a}/u-2".encode() and json.loads(msg.value())["actor"] == actor

    receipt = wait_until(lambda: (lambda r: r[2]["receipt"] if r[0] == 200 and r[2]["receipt"].get("status")
                                  == "done" else None)(call(e.base, f"{path}/{rid}", e.tokens["a_privacy"])),
                         timeout=60, what="the erasure's receipt")
    assert receipt["request_id"] == rid and receipt["filed_by"] == actor
    assert call(e.base, f"{path}/{rid}", e.tokens["a_reader"])[0] == 403  # receipts: privacy keys only
    assert call(e.base, f"/v1/tenants/{e.a}/subjects/u-2/events", e.tokens["a_reader"])[2]["events"] == []
    assert call(e.base, f"/v1/tenants/{e.a}/subjects/u-1/events", e.tokens["a_reader"])[2]["paging"]["returned"] == 2

    want = {(e.key_ids[n], "privacy_request") for n in ("a_reader", "a_detokenizer", "b_privacy", "operator")}
    # Denials are audited aggregated, by the worker's background flush (every STREAMS_API_DENIAL_AUDIT_WINDOW).
    records = wait_until(lambda: (lambda recs: recs if want <= {
        (r["details"]["key_id"], r["details"]["route"]) for r in recs if r["action"] == "api.denied"} else None)(
        _audit(e.s)), timeout=e.s.api_denial_audit_window * 3 + 30, what="the privacy denials' records")
    (rec,) = [r for r in records if r["action"] == "privacy.request_filed" and r["details"]["request_id"] == rid]
    assert rec["actor"] == actor and rec["tenant"] == e.a and rec["subject"] not in (None, "u-2")
    assert "u-2" not in json.dumps([r for r in records if r["tenant"] == e.a and r["action"].startswith("api.")])


# ---------------------------------------------------------------- revoked keys

def test_a_revoked_key_ends_an_open_keep_alive_session(env):
    """Attack: keep a connection open with a key, and go on using it after the key was revoked."""
    e = env
    for role, path in ((Role.READER, f"/v1/tenants/{e.a}/counts"), (Role.OPERATOR, "/metrics")):
        key_id, token = e.keys.create(None if role is Role.OPERATOR else e.a, role, "to be revoked")
        conn = http.client.HTTPConnection("127.0.0.1", e.s.web_port, timeout=30)
        try:
            headers = {"Authorization": f"Bearer {token}"}
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200 and not resp.will_close
            sock = conn.sock
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200 and conn.sock is sock  # the same connection, kept alive

            assert e.keys.revoke(key_id)  # what `streams apikeys revoke` does
            conn.request("GET", path, headers=headers)
            assert conn.sock is sock  # sent on the same open connection
            resp = conn.getresponse()
            answer = resp.read()
            assert resp.status == 401, answer
            assert b"streams_" not in answer and b'"count"' not in answer
        finally:
            conn.close()


# ---------------------------------------------------------------- TLS

def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "streams-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "web.crt", tmp / "web.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def test_the_web_server_speaks_tls_when_given_a_certificate(make_secure_settings, start_worker, tmp_path):
    """Attack: read the API's traffic on the wire. With a certificate the server speaks HTTPS only."""
    cert, key = _self_signed(tmp_path)
    s = make_secure_settings(web_enabled=True, web_port=free_port(), web_tls_cert=str(cert), web_tls_key=str(key))
    operator_id, operator = ApiKeyStore(redis.Redis.from_url(s.redis_url)).create(None, Role.OPERATOR, "tls")
    worker = start_worker(s)
    ctx = ssl.create_default_context(cafile=str(cert))
    base = f"https://127.0.0.1:{s.web_port}"

    def get(path: str, token: str | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    assert get("/health") == (200, b'{"status":"ok"}')
    deadline = time.monotonic() + 30
    while (status := get("/metrics", operator)[0]) == 503 and time.monotonic() < deadline:
        time.sleep(0.3)  # the API is built once the worker's runtime exists
    assert status == 200
    status, body = get("/metrics")
    assert status == 401 and b"streams_" not in body
    assert get("/router/")[0] == 404

    # Plain HTTP on the same port gets no answer at all.
    conn = http.client.HTTPConnection("127.0.0.1", s.web_port, timeout=10)
    try:
        with pytest.raises((http.client.HTTPException, OSError)):
            conn.request("GET", "/health")
            conn.getresponse().read()
    finally:
        conn.close()
    # A client that does not trust the certificate refuses the server.
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(base + "/health", timeout=10, context=ssl.create_default_context())
    assert worker.traceback_excerpt() is None, worker.traceback_excerpt()
    assert operator_id
