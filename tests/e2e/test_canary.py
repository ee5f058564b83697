"""Canary test: planted PII goes through every path and is found in the clear nowhere it must not be.

Paths: valid (delivered), invalid (DLQ), consent-dropped (an opted-out
subject), erased (a subject erased after delivery). Searched: every
tenant-topic record, every DLQ record, every audit record, the broker's
segment files of those topics, every Redis value and the Redis AOF, and the
worker's log. Only events.raw may hold raw PII (the input; this test turns its pruning off
to show that the search finds the canaries there).
"""

from __future__ import annotations

import json
import random

import pytest
import redis

from streams.ingest import samples
from streams.ingest.producer import EventProducer
from streams.schema.registry import SchemaRegistry
from tests.kafka_read import read_topic
from tests.kafka_segments import haystack, partition_files

pytestmark = pytest.mark.e2e

CANARIES = {
    "name": "Zebulon Quuxworth",
    "email": "zebulon.quux@canary.example",
    "phone": "+49 30 7654321",
    "street": "17 Canary Lane",
    "city": "Canaryville",
    "postal": "C4N 4RY",
    "text": "please call me at my secret canary number",
}


def _needles() -> list[bytes]:
    out = []
    for v in CANARIES.values():
        out.append(v.encode())
    # The parts a transform must not keep either (the phone's prefix, the email's local part).
    out += [b"zebulon.quux", b"7654321", b"Quuxworth"]
    return out


def _planted(tenant: str, n: int) -> list[dict]:
    rng = random.Random(21)
    events = []
    for i in range(n):
        subject = f"canary-{i % 3}"
        events.append(samples.signup(tenant, subject, rng, full_name=CANARIES["name"], email=CANARIES["email"],
                                     phone=CANARIES["phone"], birth_date="1980-04-05"))
        o = samples.order(tenant, subject, rng)
        o["shipping_address"].update(recipient_name=CANARIES["name"], street=CANARIES["street"],
                                     city=CANARIES["city"], postal_code=CANARIES["postal"])
        events.append(o)
        events.append(samples.support(tenant, subject, rng, reply_to=CANARIES["email"], body=CANARIES["text"]))
    return events


def test_no_canary_in_clean_outputs(make_settings, start_worker, stack):
    # Raw records stay (no pruning) so the test can show its search finds the canaries there.
    s = make_settings(raw_prune_interval=0)
    tenant = sorted(s.tenants)[0]
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    valid = _planted(tenant, 4)
    producer = EventProducer(s.kafka_bootstrap, s.raw_topic, registry)
    for i, e in enumerate(valid):
        producer.send(e, "json" if i % 2 else "avro")
    # Invalid events carrying the same canaries: schema violation, unknown tenant, key mismatch.
    bad = [dict(valid[0], birth_date=CANARIES["email"]), dict(valid[0], tenant_id="nosuch"),
           dict(valid[1], subject_id="someone-else")]
    for b in bad:
        producer.send_raw(f"{tenant}/{valid[0]['subject_id']}".encode(), json.dumps(b).encode())
    producer.flush()
    worker = start_worker(s)
    tenant_msgs = read_topic(s.kafka_bootstrap, s.tenant_topic(tenant), expect=len(valid), timeout=60)
    assert len(tenant_msgs) == len(valid)

    # Consent-dropped path: an opted-out subject's events carrying the canaries.
    from tests.e2e.test_privacy_requests import _file

    _file(s, tenant, "opt_out", "canary-dropped")
    for e in _planted(tenant, 1):
        producer.send(dict(e, subject_id="canary-dropped"))
    producer.flush()
    # Erased path: one of the delivered subjects is erased.
    _file(s, tenant, "erase", "canary-0")
    erased = sum(e["subject_id"] == "canary-0" for e in valid)
    tenant_msgs = read_topic(s.kafka_bootstrap, s.tenant_topic(tenant), expect=len(valid) + erased, timeout=60)
    dlq_msgs = read_topic(s.kafka_bootstrap, s.dlq_topic, expect=len(bad), timeout=60)
    assert len(dlq_msgs) == len(bad)
    assert sum(m.value() is None for m in tenant_msgs) == erased  # the erasure's tombstones
    from streams.audit.log import read_all

    audit = read_all(s.kafka_bootstrap, s.audit_topic)
    assert any(rec["action"] == "consent.drop" for _, rec in audit)
    worker.stop()

    needles = _needles()
    haystacks: dict[str, bytes] = {}
    for m in tenant_msgs:
        haystacks[f"{s.tenant_topic(tenant)}@{m.offset()}"] = (m.value() or b"") + (m.key() or b"")
    for pos, rec in audit:
        haystacks[f"{s.audit_topic}@{pos}"] = json.dumps(rec).encode()
    for m in dlq_msgs:
        haystacks[f"{s.dlq_topic}@{m.offset()}"] = m.value() + (m.key() or b"")
    r = redis.Redis.from_url(s.redis_url)
    for k in r.scan_iter(match=f"t:{{{tenant}}}:*", count=1000):
        t = r.type(k)
        if t == b"string":
            haystacks[k.decode()] = r.get(k)
        elif t == b"zset":
            haystacks[k.decode()] = b" ".join(r.zrange(k, 0, -1)) + k
    for k in r.scan_iter(match=f"k:{{{tenant}}}:*", count=1000):
        haystacks[k.decode()] = k
    haystacks["worker.log"] = worker.log_path.read_bytes()
    # Segment files of the clean topics, as on disk, with their compressed batches opened.
    for topic in (s.tenant_topic(tenant), s.dlq_topic, s.audit_topic):
        for seg in partition_files(stack.kafka_log_dirs, topic):
            haystacks[str(seg)] = haystack(seg)
    if stack.redis_dir is not None:
        r.bgrewriteaof()
        for f in stack.redis_dir.rglob("appendonly*"):
            if f.is_file():
                haystacks[str(f)] = f.read_bytes()

    assert len(haystacks) > len(valid)
    leaks = [(where, n.decode()) for where, data in haystacks.items() for n in needles if n in data]
    assert leaks == [], leaks[:10]

    # The raw topic does hold them (the test plants where it looks).
    raw = read_topic(s.kafka_bootstrap, s.raw_topic, expect=len(valid) + len(bad), timeout=30)
    assert any(CANARIES["email"].encode() in m.value() for m in raw)
