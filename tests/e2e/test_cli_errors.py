"""The CLI on the real stack with one dependency missing, the tenants commands, and audited key rotation.

Each command runs as a subprocess of this checkout. A refused command must
print one line, exit with its documented status, and change nothing: the tests
look at Redis and Kafka afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid

import pytest
import redis
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from streams.audit.keys import open_audit_log
from streams.audit.log import read_all
from streams.cli.errors import EXIT_BROKEN_PIPE, EXIT_UNREACHABLE, EXIT_USAGE
from streams.ingest import samples
from streams.ingest.producer import EventProducer
from streams.privacy.detokenize import Detokenizer
from streams.privacy.keys import KeyStore, LocalKeyFileProvider
from streams.privacy.pseudonyms import Pseudonymizer
from streams.schema import codec
from streams.schema.registry import SchemaRegistry
from streams.settings import REPO_ROOT
from tests.conftest import settings_env
from tests.kafka_read import read_topic

pytestmark = pytest.mark.e2e

KAFKA_DOWN = {"STREAMS_KAFKA_BOOTSTRAP": "127.0.0.1:1"}


def _cli(s, *args, env=None, timeout=120):
    full = settings_env(s)
    full["PYTHONPATH"] = str(REPO_ROOT)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "streams.cli.main", *args], env=full, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)


def _one_line(r, code, *words):
    assert "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.returncode == code, (r.returncode, r.stderr)
    for w in words:
        assert w in r.stderr, (w, r.stderr)


def _high_watermark(s, topic, attempts: int = 20):
    """Sum of the topic's end offsets. A topic created a moment ago may answer "not leader" to a new
    client whose metadata lags the admin's: asked again, up to ``attempts`` times."""
    c = Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": f"hw-{uuid.uuid4().hex[:6]}", "log_level": 0})
    try:
        for i in range(attempts):
            try:
                parts = c.list_topics(topic, timeout=10).topics[topic].partitions
                return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts)
            except KafkaException as exc:
                if not exc.args[0].retriable() and exc.args[0].code() != KafkaError.NOT_LEADER_FOR_PARTITION \
                        or i == attempts - 1:
                    raise
                time.sleep(0.5)
    finally:
        c.close()


def _tenants(s):
    r = _cli(s, "tenants", "list")
    assert r.returncode == 0, r.stderr
    return {t["tenant"] for t in json.loads(r.stdout)}


def _keys(s):
    return KeyStore(redis.Redis.from_url(s.redis_url), LocalKeyFileProvider(s.master_key_file))


# ---------------------------------------------------------------- Kafka down, Redis up

def test_with_kafka_down_every_writing_command_stops_in_one_line_and_changes_nothing(make_settings):
    s = make_settings()
    tenant = sorted(s.tenants)[0]
    keys = _keys(s)
    version = keys.ensure_tenant_key(tenant)
    newco = f"down{uuid.uuid4().hex[:6]}"
    label = f"down-{uuid.uuid4().hex[:6]}"
    requests_before = _high_watermark(s, s.requests_topic)
    audit_before = _high_watermark(s, s.audit_topic)

    for args in [("tenants", "create", newco), ("keys", "rotate", tenant),
                 ("privacy", "file", tenant, "--type", "erase", "--subject", "s-1"),
                 ("apikeys", "create", "--role", "operator", "--label", label),
                 ("detokenize", tenant, "s-1", "tok.email.x", "--reason", "r"),
                 ("tenants", "delete", tenant, "--yes"), ("audit", "verify")]:
        t0 = time.monotonic()
        r = _cli(s, *args, env=KAFKA_DOWN)
        _one_line(r, EXIT_UNREACHABLE, "Kafka is unreachable at 127.0.0.1:1", "STREAMS_KAFKA_BOOTSTRAP")
        assert time.monotonic() - t0 < 20, args

    # Nothing changed: no tenant, no rotation, no request, no API key, no audit record.
    assert newco not in _tenants(s)
    assert keys.tenant_key_version(tenant) == version
    assert _high_watermark(s, s.requests_topic) == requests_before
    assert _high_watermark(s, s.audit_topic) == audit_before
    r = _cli(s, "apikeys", "list")
    assert r.returncode == 0 and label not in r.stdout
    # Redis-only commands keep working with Kafka down.
    r = _cli(s, "store", tenant, "--count", env=KAFKA_DOWN)
    assert r.returncode == 0 and r.stdout.strip() == "0", r.stderr
    r = _cli(s, "keys", "show", tenant, env=KAFKA_DOWN)
    assert r.returncode == 0 and f"key version {version}" in r.stdout, r.stderr


def test_with_the_audit_trail_missing_nothing_is_rotated_or_created(make_settings):
    s = make_settings()
    tenant = sorted(s.tenants)[0]
    keys = _keys(s)
    version = keys.ensure_tenant_key(tenant)
    newco = f"noaud{uuid.uuid4().hex[:6]}"
    missing = {"STREAMS_AUDIT_TOPIC": f"audit.missing.{uuid.uuid4().hex[:6]}"}
    for args in [("keys", "rotate", tenant), ("tenants", "create", newco), ("audit", "verify"),
                 ("detokenize", tenant, "s-1", "tok.email.x", "--reason", "r")]:
        r = _cli(s, *args, env=missing)
        _one_line(r, EXIT_UNREACHABLE, "the audit trail is unreachable", "does not exist", "STREAMS_AUDIT_TOPIC")
    assert keys.tenant_key_version(tenant) == version
    assert newco not in _tenants(s)


# ---------------------------------------------------------------- tenants

def test_tenants_list_describe_rotate_guarded_delete(make_settings):
    s = make_settings()
    t = f"cli{uuid.uuid4().hex[:6]}"

    # A bad --roles creates nothing.
    r = _cli(s, "tenants", "create", t, "--roles", "reader,admin")
    _one_line(r, EXIT_USAGE, "--roles", "'admin'", "nothing was created")
    assert t not in _tenants(s)
    r = _cli(s, "tenants", "describe", t)
    _one_line(r, EXIT_USAGE, f"no tenant {t}")

    r = _cli(s, "tenants", "create", t, "--roles", "reader,detokenizer", "--regime", "opt_in")
    assert r.returncode == 0, r.stderr
    created = json.loads(r.stdout)
    assert created["status"] == "created" and created["regime"] == "opt_in"
    old_keys = {k["key_id"] for k in created["credentials"]["api_keys"]}
    assert {k["role"] for k in created["credentials"]["api_keys"]} == {"reader", "detokenizer"}

    listed = json.loads(_cli(s, "tenants", "list").stdout)
    [mine] = [x for x in listed if x["tenant"] == t]
    assert mine["regime"] == "opt_in" and mine["status"] == "active"

    r = _cli(s, "tenants", "describe", t)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["tenant"] == t and d["status"] == "active" and d["tenant_key_version"] == 1
    assert all(v != "missing" for v in d["topics"].values()) and s.tenant_topic(t) in d["topics"]
    assert d["redis_user"]["exists"] is True
    assert {k["key_id"] for k in d["api_keys"]} == old_keys
    secrets = [k["token"] for k in created["credentials"]["api_keys"]] + [created["credentials"]["redis"]["password"]]
    assert not [x for x in secrets if x in r.stdout]  # describe shows no secrets

    r = _cli(s, "tenants", "rotate-credentials", t)
    assert r.returncode == 0, r.stderr
    assert "shown once" in r.stderr
    rotated = json.loads(r.stdout)["credentials"]
    new_keys = {k["key_id"] for k in rotated["api_keys"]}
    assert rotated["redis"]["password"] and new_keys and not new_keys & old_keys
    d = json.loads(_cli(s, "tenants", "describe", t).stdout)
    assert {k["key_id"] for k in d["api_keys"]} == new_keys  # the old keys are gone

    # delete without --yes changes nothing, and says so.
    r = _cli(s, "tenants", "delete", t)
    _one_line(r, EXIT_USAGE, "not deleted", "--yes")
    assert t in _tenants(s)
    d = json.loads(_cli(s, "tenants", "describe", t).stdout)
    assert d["status"] == "active" and d["tenant_key_version"] == 1 and d["redis_user"]["exists"]

    r = _cli(s, "tenants", "delete", t, "--yes")
    assert r.returncode == 0, r.stderr
    receipt = json.loads(r.stdout)
    assert receipt["status"] == "done" and receipt["tenant"] == t
    assert t not in _tenants(s)

    actions = [(rec["action"], rec["tenant"]) for _, rec in read_all(s.kafka_bootstrap, s.audit_topic)]
    assert [a for a, tt in actions if tt == t] == ["tenant.create", "tenant.rotate_credentials", "tenant.delete"]


# ---------------------------------------------------------------- output into `| head -1`

def test_dlq_into_head_ends_quietly(make_settings):
    s = make_settings()
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": s.kafka_bootstrap})
    for i in range(2000):  # ~400 KB of output: far more than a pipe buffers
        p.produce(s.dlq_topic, json.dumps({"reason": "schema_invalid", "detail": "x" * 100, "seq": i,
                                           "source": {"topic": s.raw_topic, "partition": 0, "offset": i}}))
    p.flush(30)
    env = {**settings_env(s), "PYTHONPATH": str(REPO_ROOT)}
    r = subprocess.run(["bash", "-c", f"{sys.executable} -m streams.cli.main dlq --from-beginning --json "
                                      "--timeout 60 | head -1; echo \"status=${PIPESTATUS[0]}\" >&2"],
                       env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert json.loads(r.stdout)["seq"] == 0
    assert r.stderr.strip() == f"status={EXIT_BROKEN_PIPE}", r.stderr  # nothing else: no BrokenPipeError


# ---------------------------------------------------------------- a second worker on a taken web port

def test_second_worker_on_the_same_web_port_exits_in_one_line(make_settings, start_worker):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s = make_settings(web_enabled=True, web_port=port)
    first = start_worker(s)
    env = {**settings_env(s), "PYTHONPATH": str(REPO_ROOT)}
    r = subprocess.run([sys.executable, "-m", "streams.cli.main", "worker", "--no-create-topics"], env=env,
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    _one_line(r, EXIT_USAGE, f"web port {port} is taken", "STREAMS_WEB_PORT")
    assert first.proc.poll() is None  # the first one goes on serving
    import urllib.request

    assert json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)) == {"status": "ok"}


# ---------------------------------------------------------------- key rotation: audited, and under load

def _audit_rotations(s, tenant):
    return [rec for _, rec in read_all(s.kafka_bootstrap, s.audit_topic)
            if rec.get("action") == "key.rotate" and rec.get("tenant") == tenant]


def test_keys_rotate_is_audited(make_settings):
    s = make_settings()
    tenant = sorted(s.tenants)[0]
    keys = _keys(s)
    v = keys.ensure_tenant_key(tenant)
    keys.subject_keys(tenant, ["a-1", "a-2"])
    r = _cli(s, "keys", "rotate", tenant, "--actor", "ops-bob")
    assert r.returncode == 0, r.stderr
    assert f"key version {v} -> {v + 1}, 2 subject keys re-wrapped" in r.stdout
    [rec] = _audit_rotations(s, tenant)
    assert rec["actor"] == "cli:ops-bob"
    assert rec["details"] == {"old_version": v, "new_version": v + 1, "rewrapped": 2, "deleted_versions": 1}
    assert _cli(s, "audit", "verify").returncode == 0


def test_key_rotation_while_a_worker_runs_under_load(make_settings, start_worker):
    s = make_settings(batch_size=50)
    tenant = sorted(s.tenants)[0]
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    start_worker(s)
    keys = _keys(s)

    sent: dict[str, tuple[str, str]] = {}  # event id -> (subject, the email it carried)
    phase: dict[str, str] = {}  # event id -> before / during / after
    current = {"phase": "before"}
    stop = threading.Event()

    def publish() -> None:
        producer = EventProducer(s.kafka_bootstrap, s.raw_topic, registry)
        i = 0
        while not stop.is_set():
            email, subject = f"load{i}@example.com", f"rot-{i % 40}"
            e = samples.signup(tenant, subject, email=email)
            producer.send(e)
            sent[e["event_id"]] = (subject, email)
            phase[e["event_id"]] = current["phase"]
            i += 1
            if i % 20 == 0:
                producer.flush()
                time.sleep(0.02)
        producer.flush()

    t = threading.Thread(target=publish, daemon=True)
    t.start()
    deadline = time.monotonic() + 60
    while keys.tenant_key_version(tenant) is None or len(sent) < 300:  # the worker made the tenant key
        assert time.monotonic() < deadline, "no load reached the worker"
        time.sleep(0.1)
    v = keys.tenant_key_version(tenant)
    current["phase"] = "during"
    r = _cli(s, "keys", "rotate", tenant)
    current["phase"] = "after"
    assert r.returncode == 0 and f"-> {v + 1}" in r.stdout, r.stderr
    time.sleep(2)
    stop.set()
    t.join(30)
    assert {"before", "during", "after"} <= set(phase.values())

    # Every event is delivered, once the pipeline catches up.
    msgs = read_topic(s.kafka_bootstrap, s.tenant_topic(tenant), expect=len(sent), timeout=120)
    clean = SchemaRegistry.load_dir(s.schemas_dir / "clean")
    delivered = {}
    for m in msgs:
        _, ev = codec.decode(clean, m.value())
        delivered[str(ev["event_id"])] = ev
    assert set(delivered) == set(sent)

    # The rotation is complete: one version, every subject key wrapped by it, its audit record written.
    assert keys.tenant_key_version(tenant) == v + 1
    client = redis.Redis.from_url(s.redis_url)
    [rec] = _audit_rotations(s, tenant)
    assert rec["details"]["old_version"] == v and rec["details"]["new_version"] == v + 1
    assert rec["details"]["deleted_versions"] >= 1  # the old version is gone: no key can be wrapped by it

    # Tokens made before, during and after the rotation detokenize to what was sent (through the
    # audited path, with keys read afresh: only the new tenant-key version exists now).
    provider = LocalKeyFileProvider(s.master_key_file)
    with open_audit_log(s, "test:rotation", client=client, provider=provider) as audit:
        d = Detokenizer(KeyStore(client, provider), audit, Pseudonymizer(client, provider))
        by_phase: dict[str, int] = {}
        for event_id, ev in delivered.items():
            p = phase[event_id]
            if p != "during" and by_phase.get(p, 0) >= 100:
                continue  # every event of the rotation's window, a hundred of each side
            subject, email = sent[event_id]
            assert ev["email"].startswith("tok.email.") and email not in json.dumps(ev, default=str)
            assert d.detokenize(tenant, subject, ev["email"], "test:rotation", "rotation check") == email
            by_phase[p] = by_phase.get(p, 0) + 1
    assert all(by_phase.get(p, 0) > 0 for p in ("before", "during", "after")), by_phase


# ---------------------------------------------------------------- a refused Kafka login

def test_wrong_kafka_password_is_named_within_seconds(make_secure_settings):
    s = make_secure_settings()
    t0 = time.monotonic()
    r = _cli(s, "audit", "verify", env={"STREAMS_KAFKA_PASSWORD": "not-the-password"})
    _one_line(r, EXIT_UNREACHABLE, "Kafka is unreachable", "STREAMS_KAFKA_PASSWORD")
    assert "not-the-password" not in r.stderr
    assert "refused the login" in r.stderr or "uthentication" in r.stderr, r.stderr
    assert time.monotonic() - t0 < 20
