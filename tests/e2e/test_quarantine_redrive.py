"""Quarantine and redrive through a real worker and the CLI, as an operator runs them.

Events of a tenant not yet onboarded go to the DLQ as ``unknown_tenant``; their originals are
kept sealed on the quarantine topic (no plaintext: canary scan of its bytes, with a positive
control on the raw input). The tenant is onboarded late, one of its subjects erased, and
``streams dlq-redrive`` sends the others back: delivered exactly once (a second run redrives
nothing), the erased subject's never. A schema violation of an onboarded tenant is sealed with
its subject's key: after that subject's erasure the copy no longer opens at all.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections import Counter

import pytest
import redis

from streams.dlq.quarantine import Quarantine, QuarantineError, quarantine_keyring, subject_keys_of
from streams.ingest import samples
from streams.ingest.producer import EventProducer, encode_event
from streams.privacy.keys import KeyStore, LocalKeyFileProvider
from streams.privacy.pseudonyms import Pseudonymizer
from streams.schema.registry import SchemaRegistry
from streams.tenancy.onboarding import build_service
from tests.conftest import settings_env
from tests.kafka_read import read_topic

pytestmark = pytest.mark.e2e

CANARY = "Quarantine Canary 5521"


def _cli(s, *args, timeout=180):
    r = subprocess.run([sys.executable, "-m", "streams.cli.main", *args], env=settings_env(s),
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[-3000:])
    return r


def _redrive(s, *args) -> dict:
    return json.loads(_cli(s, "dlq-redrive", *args).stdout.strip().splitlines()[-1])


@pytest.mark.timeout(600)
def test_a_late_tenant_is_redriven_once_and_an_erased_subject_never(make_settings, start_worker):
    s = make_settings()
    tenant = sorted(s.tenants)[0]
    late = f"late{uuid.uuid4().hex[:6]}"
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    start_worker(s)

    events = [samples.signup(late, f"l-{i}", full_name=CANARY) for i in range(3)]
    assert CANARY.encode() in encode_event(registry, events[0], "avro")  # positive control for the scan
    producer = EventProducer(s.kafka(), s.raw_topic, registry)
    producer.send_many(events)
    bad = dict(samples.signup(tenant, "sv-1", full_name=CANARY), birth_date="not-a-date")
    producer.send_raw(f"{tenant}/sv-1".encode(), json.dumps(bad).encode())

    dlq = [json.loads(m.value()) for m in read_topic(s.kafka_bootstrap, s.dlq_topic, expect=4, timeout=120)]
    assert Counter(d["reason"] for d in dlq) == {"unknown_tenant": 3, "schema_violation": 1}
    refs = {d["quarantine"]["ref"] for d in dlq}
    assert len(refs) == 4 and all(d["quarantine"]["topic"] == s.quarantine_topic for d in dlq)

    # The quarantine holds the four, sealed: no value, no subject id, no event id in the clear.
    quarantined = read_topic(s.kafka_bootstrap, s.quarantine_topic, expect=4, timeout=60)
    envelopes = {json.loads(m.value())["ref"]: json.loads(m.value()) for m in quarantined}
    assert set(envelopes) == refs
    for m in quarantined:
        blob = (m.key() or b"") + m.value() + b"".join(v for _, v in (m.headers() or []))
        assert CANARY.encode() not in blob and b"l-0" not in blob and b"sv-1" not in blob
        assert not any(e["event_id"].encode() in blob for e in events)
    sealed = Counter(e["sealed_with"] for e in envelopes.values())
    assert sealed == {"quarantine": 3, "subject": 1}

    # Onboarded late; one of its subjects, and the violating subject of the other tenant, erased.
    build_service(s, "test:redrive").create(late)
    time.sleep(3)  # the worker re-reads its tenant directory every 2 s
    _cli(s, "privacy", "file", late, "--type", "erase", "--subject", "l-2", "--reason", "test", "--wait", "60")
    _cli(s, "privacy", "file", tenant, "--type", "erase", "--subject", "sv-1", "--reason", "test", "--wait", "60")

    dry = _redrive(s, "--reason", "unknown_tenant", "--tenant", late, "--dry-run")
    assert (dry["matched"], dry["redriven"], dry["skipped"], dry["dry_run"]) == (3, 2, {"erased": 1}, True)
    assert read_topic(s.kafka_bootstrap, s.tenant_topic(late), timeout=10, idle=3) == []  # nothing sent

    done = _redrive(s, "--reason", "unknown_tenant", "--tenant", late, "--rate", "50", "--wait", "90")
    assert (done["redriven"], done["skipped"]) == (2, {"erased": 1})
    assert done["outcome"] == {"delivered": 2, "rejected_again": {}, "unaccounted": 0}
    got = read_topic(s.kafka_bootstrap, s.tenant_topic(late), expect=2, timeout=60, idle=3)
    ids = {dict(m.headers())["event-id"].decode() for m in got}
    assert ids == {events[0]["event_id"], events[1]["event_id"]}

    again = _redrive(s, "--reason", "unknown_tenant", "--tenant", late)
    assert (again["redriven"], again["skipped"]) == (0, {"already_delivered": 2, "erased": 1})
    assert len(read_topic(s.kafka_bootstrap, s.tenant_topic(late), expect=3, timeout=10, idle=3)) == 2

    # Sealed with the erased subject's key: skipped, and unreadable even given the subject id.
    sv = _redrive(s, "--reason", "schema_violation", "--tenant", tenant, "--dry-run")
    assert (sv["matched"], sv["redriven"], sv["skipped"]) == (1, 0, {"erased": 1})
    client = redis.Redis.from_url(s.redis_url)
    provider = LocalKeyFileProvider(s.master_key_file, create=False)
    q = Quarantine(s.quarantine_topic, quarantine_keyring(client, provider, s.quarantine_topic,
                                                          s.quarantine_retention_ms),
                   subject_keys_of(KeyStore(client, provider)), Pseudonymizer(client, provider), [tenant, late])
    (env,) = [e for e in envelopes.values() if e["sealed_with"] == "subject"]
    with pytest.raises(QuarantineError, match="destroyed"):
        q.open(env, "sv-1")
    (kept,) = [e for e in envelopes.values() if e["sealed_with"] == "quarantine" and
               q.open(e).event_id == events[0]["event_id"]]  # positive control: the quarantine key opens
    assert CANARY.encode() in q.open(kept).value
