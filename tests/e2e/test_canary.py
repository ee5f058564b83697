"""Canary test: planted PII goes through every path and is found in the clear nowhere it must not be.

Paths: valid (delivered), invalid (DLQ), consent-dropped (an opted-out
subject), erased (a subject erased after delivery). Searched: every
tenant-topic record, every DLQ record, every audit record, every file under
the broker's log directories (every topic but the events.raw input; not the offset and time
indexes, which hold only numbers the broker writes), every Redis
key and value of every type and prefix, Redis' files (AOF base, increments, any
RDB) after a finished rewrite, and the worker's, broker's and Redis' logs. Each
search first finds a planted control (events.raw's files, a planted Redis key).
Only events.raw may hold raw PII (the input; this test turns its pruning off
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
from tests.disk_search import broker_files, find, redis_files, redis_values, rewrite_and_wait, topic_of

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
        haystacks[f"{s.tenant_topic(tenant)}-{m.partition()}@{m.offset()}"] = (m.value() or b"") + (m.key() or b"")
    for pos, rec in audit:
        haystacks[f"{s.audit_topic}@{pos}"] = json.dumps(rec, ensure_ascii=False).encode()
    for m in dlq_msgs:
        haystacks[f"{s.dlq_topic}-{m.partition()}@{m.offset()}"] = m.value() + (m.key() or b"")
    # Every record has its own haystack (partition and offset name it: offsets repeat across partitions).
    assert len(haystacks) == len(tenant_msgs) + len(audit) + len(dlq_msgs) and audit
    haystacks["worker.log"] = worker.log_path.read_bytes()
    assert haystacks["worker.log"]
    for f in stack.log_files:  # the broker's and Redis' own logs
        if f.is_file():
            haystacks[str(f)] = f.read_bytes()

    # Redis: every key of every type and prefix (t:, k:, api:, privacy:, any other), values decoded.
    # Positive control: a key planted with a canary is found by the same search, in memory and,
    # after a finished AOF rewrite, in Redis' files; it is deleted before the real search.
    r = redis.Redis.from_url(s.redis_url)
    control = f"privacy:canary-control-{tenant}".encode()
    r.hset(control, "email", CANARIES["email"])
    assert (control.decode(), CANARIES["email"]) in find(needles, redis_values(r))
    if stack.redis_dir is not None:
        rewrite_and_wait(r)
        assert [w for w, n in find(needles, redis_files(stack.redis_dir)) if n == CANARIES["email"]], \
            "the search of Redis' files does not find a planted canary"
    r.delete(control)
    values = redis_values(r)
    assert any(k.startswith(f"t:{{{tenant}}}:") for k in values) and any(k.startswith("k:") for k in values)
    haystacks.update({f"redis:{k}": v for k, v in values.items()})

    # On disk: every file under the broker's log directories (every topic, not only the clean ones)
    # and every Redis file after a finished AOF rewrite. Off the local stack they are not on this
    # machine: the test skips at the end, after every other check, saying so.
    on_disk = bool(stack.kafka_log_dirs) and stack.redis_dir is not None
    raw_found: list[tuple[str, str]] = []
    if on_disk:
        files = broker_files(stack.kafka_log_dirs)
        # events.raw.* topics are the input (this test keeps its raw records): the control.
        raw = {w: d for w, d in files.items() if topic_of(w, stack.kafka_log_dirs).startswith("events.raw.")}
        raw_found = find(needles, {w: d for w, d in raw.items() if topic_of(w, stack.kafka_log_dirs) == s.raw_topic})
        assert raw_found, "the search of the broker's files does not find the canaries in events.raw"
        clean = {w: d for w, d in files.items() if w not in raw}
        topics = {topic_of(w, stack.kafka_log_dirs) for w in clean}
        assert {s.tenant_topic(tenant), s.dlq_topic, s.audit_topic, s.requests_topic} <= topics, topics
        haystacks.update(clean)
        rewrite_and_wait(r)
        haystacks.update(redis_files(stack.redis_dir))

    leaks = find(needles, haystacks)
    assert leaks == [], leaks[:10]

    # The raw topic does hold them (the test plants where it looks).
    raw_msgs = read_topic(s.kafka_bootstrap, s.raw_topic, expect=len(valid) + len(bad), timeout=30)
    assert any(CANARIES["email"].encode() in m.value() for m in raw_msgs)
    if not on_disk:
        pytest.skip(f"every other check passed; the broker's log dirs and Redis' folder are not on this "
                    f"machine ({stack.kind} stack), so their files were not searched")
