"""The audit trail on the real broker and Redis: signed, acknowledged appends, several writers, forgery
detected, restart, the signing keys' custody and rotation."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import time
import uuid

import pytest
import redis
from confluent_kafka import Producer
from confluent_kafka.admin import ConfigResource

from streams.audit.chain import encode_record, pseudonym, record_hash
from streams.audit.chain import verify as _verify
from streams.audit.cli import verify_command
from streams.audit.exceptions import AuditError
from streams.audit.keys import AuditKeyStore, keyring_from_redis, open_audit_log
from streams.audit.log import AuditLog, read_all
from streams.connections import admin_client
from streams.ops.topics import TopicSpec, audit_topic_spec, ensure_topics
from streams.privacy.keys import LocalKeyFileProvider
from streams.settings import Settings

pytestmark = pytest.mark.integration

SECRET = b"s" * 32


@pytest.fixture
def settings(stack, tmp_path) -> Settings:
    return dataclasses.replace(Settings.from_env({}), kafka_bootstrap=stack.kafka_bootstrap,
                               redis_url=stack.redis_url, master_key_file=tmp_path / "keys" / "master.key")


@pytest.fixture
def topic(settings) -> str:
    name = f"audit.test.{uuid.uuid4().hex[:8]}"
    assert ensure_topics(settings, [audit_topic_spec(name)]) == {name: "created"}
    return name


def _log(settings: Settings, topic: str, actor: str, **kwargs) -> AuditLog:
    """An AuditLog as the pipeline opens one: signing as the actor's writer, key from Redis."""
    return open_audit_log(dataclasses.replace(settings, audit_topic=topic), actor, **kwargs)


def _keyring(settings: Settings, topic: str):
    return keyring_from_redis(redis.Redis.from_url(settings.redis_url), topic)


def verify(records, settings: Settings, topic: str):
    return _verify(records, _keyring(settings, topic), topic)


def _append(log: AuditLog, n: int, subject: str = "u-1") -> list[dict]:
    p = pseudonym("acme", subject, SECRET)
    return [log.append("detokenize", "acme", p, f"support ticket {i}", {"fields": 1}) for i in range(n)]


def _verify_text(settings: Settings, topic: str) -> tuple[int, str]:
    out = io.StringIO()
    rc = verify_command(settings.kafka_bootstrap, topic, out, _keyring(settings, topic))
    return rc, out.getvalue()


def test_audit_topic_spec_is_one_partition_kept_forever(settings, topic):
    admin = admin_client(settings)
    md = admin.list_topics(timeout=10).topics[topic]
    assert len(md.partitions) == 1
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([res])[res].result()
    assert configs["cleanup.policy"].value == "delete"
    assert configs["retention.ms"].value == "-1"


def test_two_writers_append_acknowledged_records_that_verify(settings, topic):
    a = _log(settings, topic, "worker:w1")
    first = _append(a, 1)[0]
    assert a.last_position == (0, 0)
    b = _log(settings, topic, "cli:ops")
    assert a.chain_id != b.chain_id and a.chain_id.startswith("worker:w1:") and b.chain_id.startswith("cli:ops:")
    written = [first]
    for _ in range(3):
        written += _append(b, 1)
        written += _append(a, 1, subject="u-2")
    last = b.append("access.denied", None, None, "unknown api key", actor="api-key:k1")
    written.append(last)
    a.close()
    b.close()
    assert b.last_position == (0, 7)

    records = read_all(settings.kafka_bootstrap, topic)
    assert [pos for pos, _ in records] == [(0, i) for i in range(8)]
    assert [r for _, r in records] == written  # acknowledged means readable, in append order
    # b started after a's first record: its chain is anchored to it.
    assert records[1][1]["anchor"] == {"chain": a.chain_id, "seq": 0, "hash": first["hash"]}
    assert last["actor"] == "api-key:k1" and last["chain"] == b.chain_id
    # No subject id anywhere in the topic, only pseudonyms.
    assert not any("u-1" in json.dumps(r) or "u-2" in json.dumps(r) for _, r in records)

    report = verify(records, settings, topic)
    assert report.ok, [str(x) for x in report.breaks]
    assert report.chains[a.chain_id].seq == 3 and report.chains[b.chain_id].seq == 3
    rc, text = _verify_text(settings, topic)
    assert rc == 0
    lines = text.strip().splitlines()
    assert lines[0] == f"audit trail OK: 8 records in 2 chains, head {last['hash']}"
    assert lines[1] == "keyring: 2 keys of 2 writers; chains written by: cli:ops, worker:w1"
    assert lines[2] == (f"  chain {a.chain_id}: writer worker:w1, key {first['kid']}, seqs 0-3 (4 records), "
                        f"head {report.chains[a.chain_id].hash}")
    assert lines[3].startswith(f"  chain {b.chain_id}: writer cli:ops, key {last['kid']}, seqs 0-3")
    # Every record is signed by its writer's key, named in the record.
    assert {r["writer"] for _, r in records} == {"worker:w1", "cli:ops"}
    assert all(len(r["sig"]) == 86 for _, r in records)


def test_forged_records_are_detected_and_located(settings, topic):
    log = _log(settings, topic, "worker:w1")
    records = _append(log, 3)
    log.close()
    assert _verify_text(settings, topic)[0] == 0

    plain = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    # 1. A modified copy of seq 1 (someone "corrects" the reason), hash left as it was.
    edited = copy.deepcopy(records[1])
    edited["reason"] = "routine check"
    plain.produce(topic, encode_record(edited), partition=0)
    # 2. The same, with the hash recomputed so it looks self-consistent (it cannot be signed again).
    forged = copy.deepcopy(edited)
    forged["hash"] = record_hash(forged)
    plain.produce(topic, encode_record(forged), partition=0)
    # 3. Something that is not an audit record at all.
    plain.produce(topic, b"not json", partition=0)
    assert plain.flush(10) == 0

    rc, text = _verify_text(settings, topic)
    assert rc == 1
    lines = text.strip().splitlines()
    assert lines[0] == "audit trail BROKEN: 3 breaks in 6 records (1 chain)"
    chain = records[0]["chain"]
    assert lines[1] == (f"  modified: record at {topic}[0]@3 (chain {chain}, seq 1) was modified: "
                        f"stored hash {records[1]['hash']} != computed {record_hash(edited)}")
    assert lines[2].startswith(f"  forged: record at {topic}[0]@4 (chain {chain}, seq 1) has a signature that "
                               f"does not verify with key {records[1]['kid']} of writer worker:w1")
    assert lines[3].startswith(f"  foreign: record at {topic}[0]@5 (not an audit record)")

    report = verify(read_all(settings.kafka_bootstrap, topic), settings, topic)
    assert [(b.kind, b.position) for b in report.breaks] == [
        ("modified", (0, 3, 1)), ("forged", (0, 4, 1)), ("foreign", (0, 5, None))]


def test_restart_resumes_the_chain(settings, topic):
    log = _log(settings, topic, "worker:w1")
    mine = _append(log, 2)
    chain_id = log.chain_id
    log.close()
    # Another writer appends after it: the topic's last record is not this chain's.
    other = _log(settings, topic, "cli:ops")
    _append(other, 2)
    other.close()

    again = _log(settings, topic, "worker:w1", chain_id=chain_id)
    assert again.chain_id == chain_id
    assert again.head == (1, mine[1]["hash"])
    nxt = again.append("erasure.step", "acme", pseudonym("acme", "u-1", SECRET), "request r-1: store purged",
                       {"step": "store", "keys": 4})
    again.close()
    assert (nxt["seq"], nxt["prev"], nxt["chain"]) == (2, mine[1]["hash"], chain_id)
    assert "anchor" not in nxt

    report = verify(read_all(settings.kafka_bootstrap, topic), settings, topic)
    assert report.ok, [str(x) for x in report.breaks]
    assert report.chains[chain_id].seq == 2 and report.chains[chain_id].records == 3
    assert report.chains[chain_id].offset == 4


def test_resume_finds_a_chain_far_back(settings, topic):
    log = _log(settings, topic, "worker:w1")
    mine = _append(log, 1)[0]
    log.close()
    busy = _log(settings, topic, "worker:w2")
    _append(busy, 150)  # more than the first backwards window
    busy.close()
    again = _log(settings, topic, "worker:w1", chain_id=mine["chain"])
    assert again.head == (0, mine["hash"])
    assert again.append("detokenize", "acme", None, "r")["seq"] == 1
    again.close()
    assert verify(read_all(settings.kafka_bootstrap, topic), settings, topic).ok


def test_an_unacknowledged_append_fails_and_abandons_the_chain(settings, topic):
    log = _log(settings, topic, "worker:w1", timeout=3.0)
    _append(log, 1)
    first_chain = log.chain_id
    admin = admin_client(settings)
    admin.delete_topics([topic], operation_timeout=30)[topic].result()
    deadline = time.monotonic() + 30
    while topic in admin.list_topics(timeout=10).topics and time.monotonic() < deadline:
        time.sleep(0.2)

    with pytest.raises(AuditError, match="not acknowledged"):
        _append(log, 1)
    assert log.chain_id is None  # never continued after an uncertain write

    ensure_topics(settings, [audit_topic_spec(topic)])
    rec = _append(log, 1)[0]
    log.close()
    assert rec["seq"] == 0 and rec["chain"] != first_chain and rec["chain"].startswith("worker:w1:")
    assert verify(read_all(settings.kafka_bootstrap, topic), settings, topic).ok


def test_refuses_a_topic_with_several_partitions_and_a_missing_one(settings):
    name = f"audit.test.{uuid.uuid4().hex[:8]}"
    ensure_topics(settings, [TopicSpec(name, 3, {})])
    with pytest.raises(AuditError, match="exactly one"):
        _log(settings, name, "worker:w1")
    missing = f"audit.missing.{uuid.uuid4().hex[:8]}"
    with pytest.raises(AuditError, match="does not exist"):
        _log(settings, missing, "worker:w1")
    rc, text = _verify_text(settings, missing)
    assert rc == 1 and "does not exist" in text


# ---------------------------------------------------------------- the signing keys in Redis


def test_signing_keys_are_wrapped_published_and_shared_by_a_writers_processes(settings, topic, stack):
    client = redis.Redis.from_url(stack.redis_url)
    provider = LocalKeyFileProvider(settings.master_key_file)
    store = AuditKeyStore(client, provider, topic)
    a = store.signer("worker:w1")
    b = AuditKeyStore(redis.Redis.from_url(stack.redis_url), LocalKeyFileProvider(settings.master_key_file),
                      topic).signer("worker:w1")
    assert a.kid == b.kid  # one key per writer, whichever process created it
    keyring = store.keyring()
    assert set(keyring) == {a.kid} and keyring[a.kid].writer == "worker:w1"
    # Nothing in Redis holds the private key in the clear.
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
    raw = a._private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    import base64
    dump = b"".join(k + v for k, v in client.hgetall(f"audit:{{{topic}}}:signer:worker:w1").items())
    dump += b"".join(k + v for k, v in client.hgetall(f"audit:{{{topic}}}:pub").items())
    assert raw not in dump and base64.b64encode(raw) not in dump and raw.hex().encode() not in dump
    # Another master key cannot unwrap it: the key is useless without the key provider.
    other = LocalKeyFileProvider(settings.master_key_file.parent.parent / "other" / "master.key")
    with pytest.raises(AuditError, match="cannot be unwrapped with this master key"):
        AuditKeyStore(client, other, topic).signer("worker:w1")


def test_rotation_keeps_the_trail_verifiable(settings, topic, stack):
    log = _log(settings, topic, "worker:w1")
    before = _append(log, 2)
    log.close()
    store = AuditKeyStore(redis.Redis.from_url(stack.redis_url), LocalKeyFileProvider(settings.master_key_file),
                          topic)
    old, new = store.rotate("worker:w1")
    assert old == before[0]["kid"] and new != old
    assert store.current_kids() == {"worker:w1": new}
    keyring = store.keyring()
    assert keyring[old].retired_ms is not None and keyring[new].retired_ms is None
    again = _log(settings, topic, "worker:w1", chain_id=before[0]["chain"])  # restart: resumes, new key
    after = _append(again, 1)[0]
    again.close()
    assert (after["kid"], after["seq"], after["prev"]) == (new, 2, before[1]["hash"])
    report = verify(read_all(settings.kafka_bootstrap, topic), settings, topic)
    assert report.ok, [str(b) for b in report.breaks]
    assert report.chains[before[0]["chain"]].kids == (old, new)
