"""Issue 16 through the real worker: the DLQ, the worker's log, its metrics and the audit trail hold no text
a producer chose, and an erasure leaves nothing in the DLQ that names the subject.

One worker run per test: hypothesis draws a batch of bad records (every canary kind
twice, plus random ones), they are published, then one worker consumes them all.
Every search has its positive control: the same search finds the canary in the raw input.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from streams.audit.log import read_all
from streams.ingest.producer import EventProducer
from streams.schema.registry import SchemaRegistry
from tests.conftest import settings_env
from tests.dlq_canaries import KINDS, cases, found
from tests.e2e.test_api_http import free_port
from tests.kafka_read import read_topic
from tests.metrics_page import operator_token, scrape_text

pytestmark = pytest.mark.e2e


def _cli(s, *args, timeout=120):
    return subprocess.run([sys.executable, "-m", "streams.cli.main", *args], env=settings_env(s),
                          capture_output=True, text=True, timeout=timeout)


def _metrics(s, port: int) -> bytes:
    """The metrics page, as an operator reads it (it names tenants: operator keys only)."""
    return scrape_text(port, operator_token(s)).encode()


@settings(max_examples=1, deadline=None, database=None, phases=[Phase.generate],  # one worker run: no shrinking
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_no_canary_in_dlq_log_metrics_or_audit(make_settings, start_worker, data):
    s = make_settings(web_enabled=True, web_port=free_port(), raw_prune_interval=0)
    tenant = sorted(s.tenants)[0]
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    batch = data.draw(cases(tenant, registry, n_extra=6))
    assert {c.kind for c in batch} == set(KINDS) and len(batch) == 2 * len(KINDS) + 6
    producer = EventProducer(s.kafka_bootstrap, s.raw_topic, registry)
    for c in batch:
        producer.send_raw(c.key, c.value, c.headers)
    producer.flush()

    worker = start_worker(s)
    dlq = read_topic(s.kafka_bootstrap, s.dlq_topic, expect=len(batch), timeout=60)
    assert len(dlq) == len(batch), worker.log_text()[-3000:]
    page = _metrics(s, s.web_port)
    assert b"streams_events_dlq_total" in page
    worker.stop()
    audit = read_all(s.kafka_bootstrap, s.audit_topic)
    raw = read_topic(s.kafka_bootstrap, s.raw_topic, expect=len(batch), timeout=30)

    haystacks: dict[str, bytes] = {"worker.log": worker.log_path.read_bytes(), "metrics": page}
    for m in dlq:
        haystacks[f"dlq@{m.offset()}"] = b"\n".join(
            [m.value(), m.key() or b""] + [n.encode() + b"=" + (v or b"") for n, v in (m.headers() or [])])
    for pos, rec in audit:
        haystacks[f"audit@{pos}"] = json.dumps(rec).encode()
    raw_text = b"\n".join(m.value() + (m.key() or b"") + b"".join(n.encode() + (v or b"") for n, v in
                                                                (m.headers() or [])) for m in raw)

    leaks = []
    for c in batch:
        assert found(c.canary, c.raw_bytes()), c.kind  # positive control on the input as built
        assert found(c.canary, raw_text), c.kind  # ... and as the broker holds it
        leaks += [(c.kind, c.canary, where) for where, text in haystacks.items() if found(c.canary, text)]
    assert leaks == [], leaks[:10]

    docs = {(d["source"]["partition"], d["source"]["offset"]): d for d in (json.loads(m.value()) for m in dlq)}
    assert len(docs) == len(batch)  # one DLQ record per bad record
    for m in raw:
        doc = docs[(m.partition(), m.offset())]
        assert doc["v"] == 2 and doc["payload_fingerprint"].startswith("v1:")  # the stored DLQ key, version 1
        assert doc["payload_size"] == len(m.value())
    members = [d for d in docs.values() if d["unknown_members"]]
    assert members and all(d["unknown_members"]["count"] >= 1 and d["unknown_members"]["positions"]
                           and d["unknown_members"]["schema"] for d in members)


def test_erasure_leaves_no_subject_id_in_the_dlq(make_settings, start_worker):
    from tests.e2e.test_privacy_requests import _file

    s = make_settings()
    tenant = sorted(s.tenants)[0]
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    subject = "subj-Erasable-7731"
    from streams.ingest import samples

    producer = EventProducer(s.kafka_bootstrap, s.raw_topic, registry)
    bad = [dict(samples.signup(tenant, subject), birth_date="not-a-date"),   # schema violation, keyed by subject
           dict(samples.signup(tenant, subject), subject_id="someone-else")]  # key mismatch
    for ev in bad:
        producer.send_raw(f"{tenant}/{subject}".encode(), json.dumps(ev).encode())
    producer.send(samples.signup(tenant, subject))  # one delivered event too
    producer.flush()
    raw = read_topic(s.kafka_bootstrap, s.raw_topic, expect=3, timeout=30)
    assert all(subject.encode() in m.value() + (m.key() or b"") for m in raw)  # positive control

    start_worker(s)
    dlq = read_topic(s.kafka_bootstrap, s.dlq_topic, expect=len(bad), timeout=60)
    assert len(dlq) == len(bad)
    docs = [json.loads(m.value()) for m in dlq]
    pseud = {d["key"]["subject"] for d in docs}
    assert len(pseud) == 1 and next(iter(pseud)).startswith("p_")
    assert all(subject.encode() not in m.value() + (m.key() or b"") for m in dlq)

    # Triage before the erasure: the audited way back.
    r = _cli(s, "dlq-resolve", tenant, next(iter(pseud)), "--reason", "triage of a key mismatch")
    assert r.returncode == 0 and r.stdout.strip() == subject, r.stdout + r.stderr
    resolves = [rec for _, rec in read_all(s.kafka_bootstrap, s.audit_topic) if rec["action"] == "dlq.resolve"]
    assert resolves and resolves[-1]["subject"] == next(iter(pseud)) and resolves[-1]["details"]["outcome"] == "ok"
    assert subject not in json.dumps(resolves)

    _, receipt = _file(s, tenant, "erase", subject)
    step = next(st for st in receipt["steps"] if st["step"] == "dlq")
    assert step["subject_named"] == "pseudonym only" and step["resolvable"] is False
    assert step["resolve_mappings_deleted"] == 1

    # Afterwards: no DLQ record names the subject, and the pseudonym resolves to nothing.
    dlq = read_topic(s.kafka_bootstrap, s.dlq_topic, expect=None, timeout=30, idle=2)
    assert len(dlq) == len(bad)
    for m in dlq:
        assert subject.encode() not in m.value() + (m.key() or b"") + b"".join(
            n.encode() + (v or b"") for n, v in (m.headers() or []))
    deadline = time.monotonic() + 10
    r = _cli(s, "dlq-resolve", tenant, next(iter(pseud)), "--reason", "triage after the erasure")
    assert r.returncode == 2 and "erased" in r.stderr and subject not in r.stdout + r.stderr
    assert time.monotonic() < deadline + 120
    refused = [rec for _, rec in read_all(s.kafka_bootstrap, s.audit_topic)
               if rec["action"] == "dlq.resolve" and rec["details"]["outcome"] == "refused"]
    assert refused
