"""Attack: forge the audit trail with nothing but the right to write the ``audit`` topic (issue 8).

The attacker has a plain confluent-kafka producer that may write (and read) the
audit topic, but neither the master key nor the pipeline's Redis, so no
writer's signing key. Before signatures, a self-consistent chain (hashes and
links recomputed) blamed a detokenization on a real API key id and recorded an
erasure that never ran, and ``streams audit verify`` said OK. Now every such
record must be rejected by the command an auditor runs, run as a process
(`python -m streams.cli.main audit verify`), naming the problem, exiting
non-zero, while the genuine chains still verify. Modification, removal,
reordering and replay are attacked too; the first three need rewriting the
topic (someone with the broker's files or a restored copy), done here by
copying the trail into another topic and verifying it with ``--trail``.
"""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys
import uuid

import pytest
import redis
from confluent_kafka import Producer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from streams.api.api_keys import ApiKeyStore, Role
from streams.audit.chain import GENESIS_PREV, encode_record, record_hash
from streams.audit.keys import open_audit_log
from streams.audit.log import read_all
from streams.audit.signing import Signer, signing_input
from streams.ops.topics import audit_topic_spec, ensure_topics
from streams.privacy.keys import LocalKeyFileProvider
from streams.privacy.pseudonyms import Pseudonymizer
from streams.settings import REPO_ROOT
from tests.conftest import settings_env

pytestmark = pytest.mark.integration


def _streams(settings, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams.cli.main", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, env={**settings_env(settings), **(env or {})})


def _verify(settings, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    r = _streams(settings, "audit", "verify", *args, env=env)
    return r.returncode, r.stdout + r.stderr


@pytest.fixture
def trail(make_settings):
    """A genuine trail written by the pipeline's writers: a detokenization through an API key and an erasure
    by the worker writer, an API key creation by a CLI writer. Returns (settings, records, api key id, subject)."""
    s = make_settings()
    tenant = sorted(s.tenants)[0]
    client = redis.Redis.from_url(s.redis_url)
    key_id, _token = ApiKeyStore(client).create(tenant, Role.DETOKENIZER, "support desk")
    subject = Pseudonymizer(client, LocalKeyFileProvider(s.master_key_file))(tenant, "u-1001")
    worker = open_audit_log(s, f"worker:{s.app_id}")
    worker.append("detokenize", tenant, subject, "support ticket T-88", {"outcome": "ok", "token_kind": "email"},
                  actor=f"api:{key_id}")
    worker.append("privacy.erase", tenant, subject, "request r-genuine",
                  {"request_id": "r-genuine", "filed_by": "cli:officer", "purpose": None,
                   "steps": "tombstones,store,key,aof"})
    worker.close()
    cli = open_audit_log(s, "cli:ops", "cli:ops")
    cli.append("apikey.create", tenant, None, f"API key {key_id} created", {"key_id": key_id, "role": "detokenizer"})
    cli.close()
    records = [r for _, r in read_all(s.kafka_bootstrap, s.audit_topic)]
    assert len(records) == 3
    rc, out = _verify(s)
    assert rc == 0, out
    assert out.startswith("audit trail OK: 3 records in 2 chains")
    assert f"chains written by: cli:ops, worker:{s.app_id}" in out
    return s, records, key_id, subject


def _produce(settings, topic: str, values: list[bytes]) -> None:
    # The attacker's client: a plain producer with the topic's write rights; no signing key, master key or Redis.
    p = Producer({"bootstrap.servers": settings.kafka_bootstrap, "acks": "all"})
    for v in values:
        p.produce(topic, v, partition=0)
    assert p.flush(30) == 0


def _forged_chain(genuine: dict, key_id: str, subject: str, *, sign=None, kid: str | None = None) -> list[dict]:
    """A self-consistent chain in the genuine writer's name: a detokenization blamed on a real API key id,
    and an erasure that never ran, hashes and links recomputed, anchored to the genuine head."""
    chain = f"{genuine['writer']}:{uuid.uuid4().hex}"
    out, prev = [], GENESIS_PREV
    bodies = [
        ("detokenize", f"api:{key_id}", "bulk export for marketing", {"outcome": "ok", "token_kind": "email"}),
        ("privacy.erase", genuine["writer"], "request r-never-ran",
         {"request_id": "r-never-ran", "filed_by": "cli:officer", "purpose": None,
          "steps": "tombstones,store,key,aof"}),
    ]
    for seq, (action, actor, reason, details) in enumerate(bodies):
        r = {"v": 2, "chain": chain, "seq": seq, "at_ms": genuine["at_ms"] + 1 + seq, "actor": actor,
             "action": action, "tenant": genuine["tenant"], "subject": subject, "reason": reason,
             "details": details, "prev": prev, "writer": genuine["writer"], "kid": kid or genuine["kid"]}
        if seq == 0:
            r["anchor"] = {"chain": genuine["chain"], "seq": genuine["seq"], "hash": genuine["hash"]}
        r["hash"] = record_hash(r)
        r["sig"] = sign(r) if sign else genuine["sig"]  # the best it has: a real signature of another record
        out.append(r)
        prev = r["hash"]
    return out


def _own_key_signature(key: Ed25519PrivateKey, trail: str):
    return lambda r: base64.urlsafe_b64encode(key.sign(signing_input(r, trail))).rstrip(b"=").decode()


def test_forged_chain_with_only_write_rights_is_rejected_and_the_genuine_chains_still_verify(trail):
    s, records, key_id, subject = trail
    genuine = records[1]  # the worker's erasure record: its writer and key id are copied
    own_key = Ed25519PrivateKey.generate()
    forged = _forged_chain(genuine, key_id, subject)  # a replayed real signature
    forged_own = _forged_chain(genuine, key_id, subject, sign=_own_key_signature(own_key, s.audit_topic))
    outsider = Signer("worker:" + s.app_id, own_key)  # its own key, under its own (unpublished) kid
    unknown = _forged_chain(genuine, key_id, subject, kid=outsider.kid,
                            sign=lambda r: outsider.sign(r, s.audit_topic))
    _produce(s, s.audit_topic, [encode_record(r) for r in forged + forged_own + unknown])

    rc, out = _verify(s)
    assert rc == 1, out
    lines = out.splitlines()
    assert lines[0] == "audit trail BROKEN: 5 breaks in 9 records (2 chains)"
    t = s.audit_topic
    for offset, r in zip(range(3, 7), forged + forged_own):
        assert (f"  forged: record at {t}[0]@{offset} (chain {r['chain']}, seq {r['seq']}) has a signature that "
                f"does not verify with key {genuine['kid']} of writer {genuine['writer']}") in out, out
    assert (f"  unknown-writer: record at {t}[0]@7 (chain {unknown[0]['chain']}, seq 0) starts a chain from an "
            f"unknown writer: 2 records claiming writer {genuine['writer']} signed with key {outsider.kid}") in out
    # The genuine chains are intact and named with their writers; no forged chain is among them.
    assert f"chains written by: cli:ops, worker:{s.app_id}" in out
    assert f"  chain {records[0]['chain']}: writer worker:{s.app_id}, key {genuine['kid']}, seqs 0-1 (2 records)" in out
    assert f"  chain {records[2]['chain']}: writer cli:ops, key {records[2]['kid']}, seqs 0-0 (1 record)" in out
    assert not any(f"chain {r['chain']}:" in out for r in forged + forged_own + unknown)
    for line in lines[1:6]:  # every break is at a forged record, none at a genuine one
        assert not any(f"chain {r['chain']}," in line for r in records), line


def test_unsigned_records_in_the_old_format_are_rejected(trail):
    s, records, key_id, subject = trail
    old = {k: v for k, v in _forged_chain(records[1], key_id, subject)[0].items() if k not in ("writer", "kid", "sig")}
    old["v"] = 1
    old["hash"] = record_hash(old)
    _produce(s, s.audit_topic, [encode_record(old)])
    rc, out = _verify(s)
    assert rc == 1 and "audit trail BROKEN: 1 break in 4 records" in out, out
    assert f"  forged: record at {s.audit_topic}[0]@3 (chain {old['chain']}, seq 0) is not signed" in out


def test_replayed_genuine_record_is_rejected(trail):
    s, records, _, _ = trail
    _produce(s, s.audit_topic, [encode_record(records[0])])  # a real, validly signed detokenize, again
    rc, out = _verify(s)
    assert rc == 1, out
    assert (f"  foreign: record at {s.audit_topic}[0]@3 (chain {records[0]['chain']}, seq 0) is a second copy of "
            f"the record at [0]@0") in out


def _copy(s, records: list[dict]) -> str:
    """The trail rewritten into another topic, as someone with the broker's files (or a backup) could."""
    topic = f"audit.copy.{uuid.uuid4().hex[:8]}"
    ensure_topics(s, [audit_topic_spec(topic)])
    _produce(s, topic, [encode_record(r) for r in records])
    return topic


def test_rewritten_trails_are_rejected_modified_removed_reordered(trail, tmp_path):
    s, records, _, _ = trail
    orig = s.audit_topic

    def verify_copy(rewritten: list[dict], *extra: str) -> tuple[int, str, str]:
        topic = _copy(s, rewritten)
        rc, out = _verify(s, "--trail", orig, *extra, env={"STREAMS_AUDIT_TOPIC": topic})
        return rc, out, topic

    # An unaltered copy verifies as the trail it was signed for, and only as that trail.
    rc, out, topic = verify_copy(records)
    assert rc == 0 and out.startswith("audit trail OK: 3 records in 2 chains"), out
    rc, out = _verify(s, env={"STREAMS_AUDIT_TOPIC": topic})  # no writer published keys for that trail
    assert rc == 1 and out.count("  unknown-writer: ") == 2, out
    keyring = tmp_path / "keyring.json"
    keyring.write_text(_streams(s, "audit", "keys", "export").stdout)
    rc, out = _verify(s, "--keyring", str(keyring), env={"STREAMS_AUDIT_TOPIC": topic})  # the right keys
    assert rc == 1 and out.count("  forged: ") == 3 and "signed for another trail" in out, out

    # Modified: the detokenization's reason changed (hash left, or hash recomputed: it cannot be re-signed).
    edited = copy.deepcopy(records)
    edited[0]["reason"] = "routine check"
    rc, out, topic = verify_copy(edited)
    assert rc == 1 and f"  modified: record at {topic}[0]@0 (chain {records[0]['chain']}, seq 0) was modified" in out
    edited[0]["hash"] = record_hash(edited[0])
    rc, out, topic = verify_copy(edited)
    assert rc == 1 and f"  forged: record at {topic}[0]@0 (chain {records[0]['chain']}, seq 0)" in out, out

    # Removed: the detokenization dropped from the worker's chain.
    rc, out, topic = verify_copy([records[1], records[2]])
    assert rc == 1, out
    assert (f"  removed: record at {topic}[0]@0 (chain {records[1]['chain']}, seq 1) follows a gap in its chain: "
            "seq 0 missing (removed)") in out

    # Reordered: the erasure placed before the detokenization it followed.
    rc, out, topic = verify_copy([records[1], records[0], records[2]])
    assert rc == 1, out
    assert f"  reordered: record at {topic}[0]@1 (chain {records[0]['chain']}, seq 0) is out of order" in out


def test_auditor_verifies_with_an_exported_keyring_and_no_redis(trail, tmp_path):
    s, records, key_id, subject = trail
    keyring = tmp_path / "audit-keyring.json"
    r = _streams(s, "audit", "keys", "export", "--out", str(keyring))
    assert r.returncode == 0, r.stderr
    doc = json.loads(keyring.read_text())
    assert {k["writer"] for k in doc["keys"]} == {f"worker:{s.app_id}", "cli:ops"}
    assert "private" not in keyring.read_text()
    no_redis = {"STREAMS_REDIS_URL": "redis://127.0.0.1:1/0", "STREAMS_MASTER_KEY_FILE": str(tmp_path / "none")}
    rc, out = _verify(s, "--keyring", str(keyring), env=no_redis)
    assert rc == 0 and out.startswith("audit trail OK: 3 records in 2 chains"), out
    assert f"from file {keyring}" in out
    _produce(s, s.audit_topic, [encode_record(r) for r in _forged_chain(records[1], key_id, subject)])
    rc, out = _verify(s, "--keyring", str(keyring), env=no_redis)
    assert rc == 1 and out.count("  forged: ") == 2, out
