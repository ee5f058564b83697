"""Erasure completeness on the real broker's and Redis' files.

After an erasure, and once Kafka has compacted (tenant topics) and deleted the
processed raw records' segments (events.raw), no file under the broker's log
directories (every topic's partition folders, internal topics included) and no
Redis key, value (any type, any prefix) or file (AOF base and increments; an RDB
file fails the test) holds anything of the subject: its raw values, its tokens,
its tenant-topic keys or its key material. Each search first finds the subject's
data before the erasure. Tokens
taken before the erasure can no longer be detokenized.

Compaction is made to run within the test the way an operator would tune it
(short segments, a low dirty ratio, short tombstone retention), and a live
stream of other subjects keeps arriving, because Kafka rolls, and so can clean
or delete, a segment only when a record arrives after ``segment.ms``.
"""

from __future__ import annotations

import random
import threading
import time
import uuid

import pytest
import redis

from streams.ingest import samples
from streams.ingest.producer import EventProducer
from streams.privacy.keys import subject_key_name
from streams.schema.registry import SchemaRegistry
from streams.sinks.partitioning import partition_for
from streams.sinks.store import StoreReader
from tests.e2e.test_privacy_requests import _cli, _file
from tests.disk_search import broker_files, find, redis_files, redis_values, rewrite_and_wait, topic_of
from tests.kafka_segments import haystack, partition_files

pytestmark = pytest.mark.e2e


def _fillers(tenant: str, gone: str, s) -> list[str]:
    """Other subjects whose events land on the erased subject's partitions of events.raw and of the
    tenant topic, so those partitions keep rolling segments."""
    want_raw = partition_for(f"{tenant}/{gone}".encode(), s.partitions)
    want_tenant = partition_for(gone.encode(), s.tenant_partitions)
    out: list[str] = []
    for i in range(10_000):
        subject = f"fill-{i}"
        if partition_for(f"{tenant}/{subject}".encode(), s.partitions) == want_raw and \
                partition_for(subject.encode(), s.tenant_partitions) == want_tenant:
            out.append(subject)
            if len(out) == 2:
                return out
    raise AssertionError("no filler subject found")


def _leaks(needles: list[bytes], files) -> list[tuple[str, str]]:
    found = []
    for f in files:
        try:
            data = haystack(f)
        except FileNotFoundError:  # removed by the broker while we looked
            continue
        found += [(str(f), n.decode(errors="replace")) for n in needles if n in data]
    return found


def test_erased_subject_is_on_no_disk(stack, make_settings, start_worker):
    if not stack.kafka_log_dirs or stack.redis_dir is None:
        pytest.skip("needs the broker's log directories and Redis' folder on this machine (local stack)")
    s = make_settings(segment_ms=500, max_compaction_lag_ms=1000, min_cleanable_dirty_ratio=0.01,
                      tombstone_retention_ms=500, file_delete_delay_ms=0, raw_prune_interval=0.5)
    tenant = sorted(s.tenants)[0]
    run = uuid.uuid4().hex[:10]
    gone = f"gone-{run}"
    canaries = {"name": f"Erasmus Forgetme{run}", "email": f"erasmus.{run}@canary.example",
                "street": f"{run} Oblivion Road", "text": f"my secret story {run}"}
    rng = random.Random(7)
    mine = [samples.signup(tenant, gone, rng, full_name=canaries["name"], email=canaries["email"]),
            samples.support(tenant, gone, rng, reply_to=canaries["email"], body=canaries["text"])]
    o = samples.order(tenant, gone, rng)
    o["shipping_address"].update(recipient_name=canaries["name"], street=canaries["street"])
    mine.append(o)
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    producer = EventProducer(s.kafka_bootstrap, s.raw_topic, registry)
    for e in mine:
        producer.send(e)
    producer.flush()
    needles = [v.encode() for v in canaries.values()] + [f"erasmus.{run}".encode(), f"{gone}/".encode()]
    raw_files = lambda: partition_files(stack.kafka_log_dirs, s.raw_topic)  # noqa: E731
    # The search works on this disk: the raw values are in events.raw's segments now.
    assert _leaks(needles[:1], raw_files()), "the canary is not where it was published"

    start_worker(s)
    reader = StoreReader.from_settings(s)
    deadline = time.monotonic() + 60
    while len(reader.by_subject(tenant, gone)) < len(mine) and time.monotonic() < deadline:
        time.sleep(0.2)
    docs = reader.by_subject(tenant, gone)
    assert len(docs) == len(mine)
    tokens = sorted({v.encode() for d in docs for v in _strings(d) if v.startswith("tok.")})
    assert tokens, "no tokens in the delivered events"
    r = redis.Redis.from_url(s.redis_url)
    wrapped_key = r.get(subject_key_name(tenant, gone))
    assert wrapped_key
    tenant_files = lambda: partition_files(stack.kafka_log_dirs, s.tenant_topic(tenant))  # noqa: E731
    # The tenant topic's segments hold the subject's tokens (lz4 batches, opened by the search). The
    # store is written before the topic (the batch's sink order), so the topic may follow a moment later.
    deadline = time.monotonic() + 30
    while not _leaks(tokens[:1], tenant_files()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _leaks(tokens[:1], tenant_files()), "the subject's token never reached the tenant topic's segments"
    needles += tokens + [wrapped_key]
    # The searches used after the erasure find the subject's tokens and key now: in Redis' keys and
    # values, and, after a finished AOF rewrite, in Redis' files; and in the broker's files.
    assert {tokens[0].decode(), wrapped_key.decode(errors="replace")} <= {n for _, n in find([tokens[0], wrapped_key], redis_values(r))}
    rewrite_and_wait(r)
    assert {tokens[0].decode(), wrapped_key.decode(errors="replace")} <= \
        {n for _, n in find([tokens[0], wrapped_key], redis_files(stack.redis_dir))}
    assert find(tokens[:1], broker_files(stack.kafka_log_dirs))

    _, receipt = _file(s, tenant, "erase", gone, "--reason", "completeness test")
    assert receipt["status"] == "done"
    assert receipt["steps"][1] == {**receipt["steps"][1], "step": "tombstone", "events": len(mine)}

    # Other subjects keep streaming on the same partitions while the broker does its part.
    stop = threading.Event()

    def stream() -> None:
        p = EventProducer(s.kafka_bootstrap, s.raw_topic, registry)
        fill = _fillers(tenant, gone, s)
        while not stop.is_set():
            for subject in fill:
                p.send(samples.order(tenant, subject))
            p.flush()
            stop.wait(0.2)

    t = threading.Thread(target=stream, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 150
        while True:
            # Every file under the broker's log directories: every topic (internal ones too).
            files = broker_files(stack.kafka_log_dirs)
            leaks = find(needles, files)
            if not leaks or time.monotonic() > deadline:
                break
            time.sleep(1.0)
    finally:
        stop.set()
        t.join(10)
    assert leaks == [], f"erased data still on the broker's disk: {leaks[:5]}"
    searched = {topic_of(f, stack.kafka_log_dirs) for f in files}
    assert {s.raw_topic, s.tenant_topic(tenant), s.dlq_topic, s.audit_topic, s.requests_topic} <= searched, searched
    assert tenant_files() and raw_files(), "the topics' folders are there, and were searched"

    # Redis: no key names the subject; no key or value of any type or prefix, and no file (AOF base,
    # increments, any RDB file: refused loudly) holds its data, tokens or key.
    assert not [k for k in r.scan_iter(count=1000) if gone.encode() in k]
    assert find(needles, redis_values(r)) == []
    rewrite_and_wait(r)  # the erasure rewrote the AOF; this one makes sure no later write put anything back
    assert find(needles, redis_files(stack.redis_dir)) == []

    # Tokens handed out before the erasure are irreversible now.
    res = _cli(s, "detokenize", tenant, gone, tokens[0].decode(), "--reason", "after erasure")
    assert res.returncode == 2 and "erased" in res.stderr


def _strings(doc) -> list[str]:
    if isinstance(doc, str):
        return [doc]
    if isinstance(doc, dict):
        return [x for v in doc.values() for x in _strings(v)]
    if isinstance(doc, list):
        return [x for v in doc for x in _strings(v)]
    return []

