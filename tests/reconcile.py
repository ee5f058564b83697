"""Load, then reconcile every acknowledged input against every output (the fault tests' yardstick).

Modelled on Kafka's system tests and Faust's consistency tests: a producer
publishes a steady stream (valid events for a few subjects, plus a known share
of bad ones) and records what the broker acknowledged; after the faults, every
acknowledged valid event must be in its tenant topic and the store, every
acknowledged bad one in the DLQ, and nothing else. Duplicates are allowed (at
least once) and counted; after de-duplication by event id each subject's events
must be in the order they were published.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import redis
from confluent_kafka import Producer

from streams.ingest import samples
from streams.ingest.producer import encode_event, event_key
from streams.schema.registry import SchemaRegistry
from streams.settings import Settings
from streams.sinks import store_keys as K
from streams.records import split_key
from tests.kafka_read import read_topic


@dataclass
class Sent:
    event_id: str
    tenant: str
    subject: str
    seq: int  # position among the subject's published events
    valid: bool
    partition: int = -1
    offset: int = -1


# A fault test gives up once the pipeline made no progress for this long (no new acknowledgement
# while flushing the load, no new record in the store or the DLQ while waiting): the slowest
# recovery seen (a broker restart) resumes within about 20 s.
STALL_SECONDS = 45.0


class Load(threading.Thread):
    """Publishes ``rate`` events/s round-robin over subjects until ``stop()``; every 20th is bad
    (a schema violation, keyed like the others). Keeps only what the broker acknowledged."""

    def __init__(self, s: Settings, tenants: list[str], subjects: int = 12, rate: float = 250.0,
                 bad_every: int = 20) -> None:
        super().__init__(daemon=True)
        self.s = s
        self.registry = SchemaRegistry.load_dir(s.schemas_dir)
        self.tenants = tenants
        self.subjects = subjects
        self.rate = rate
        self.bad_every = bad_every
        self.acked: list[Sent] = []
        self.failed = 0
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._producer = Producer({**s.kafka(), "enable.idempotence": True, "linger.ms": 5,
                                   "partitioner": "murmur2_random", "message.timeout.ms": 120000,
                                   "log_level": 0})

    def _on_delivery(self, sent: Sent):
        def cb(err, msg) -> None:
            with self._lock:
                if err is None:
                    sent.partition, sent.offset = msg.partition(), msg.offset()
                    self.acked.append(sent)
                else:
                    self.failed += 1
        return cb

    def run(self) -> None:
        seqs: dict[tuple[str, str], int] = defaultdict(int)
        n = 0
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not self._halt.is_set():
            tenant = self.tenants[n % len(self.tenants)]
            subject = f"rel-{(n // len(self.tenants)) % self.subjects}"
            event = [samples.signup, samples.order, samples.support][n % 3](tenant, subject)
            valid = (n % self.bad_every) != self.bad_every - 1
            if valid:
                seqs[(tenant, subject)] += 1
                value = encode_event(self.registry, event, "avro" if n % 2 else "json")
            else:
                value = json.dumps(dict(event, event_time="not a time")).encode()
            sent = Sent(str(event["event_id"]), tenant, subject, seqs[(tenant, subject)], valid)
            while True:
                try:
                    self._producer.produce(self.s.raw_topic, value, event_key(event), on_delivery=self._on_delivery(sent))
                    break
                except BufferError:  # local queue full (the broker away): wait, unless told to stop
                    if self._halt.is_set():
                        return
                    self._producer.poll(0.1)
            self._producer.poll(0)
            n += 1
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                self._halt.wait(delay)

    def stop(self, timeout: float = 120.0, stall: float | None = None) -> None:
        """Stop publishing and wait for the broker's answers: fails once none came for ``stall`` s
        (default ``STALL_SECONDS``) or after ``timeout`` s, with the counts so far."""
        stall = STALL_SECONDS if stall is None else stall
        self._halt.set()
        self.join(10)
        assert not self.is_alive(), "the load thread did not stop within 10 s"
        start = last_change = time.monotonic()
        answered = -1
        while True:
            left = self._producer.flush(1.0)
            if left == 0:
                return
            now = time.monotonic()
            with self._lock:
                counts = (len(self.acked), self.failed)
            if sum(counts) != answered:
                answered, last_change = sum(counts), now
            why = (f"no broker answer for {stall:.0f} s" if now - last_change > stall
                   else f"not all answered in {timeout:.0f} s" if now - start > timeout else None)
            if why:
                raise AssertionError(f"load: {why}; {left} events unanswered, {counts[0]} acknowledged, "
                                     f"{counts[1]} failed")


@dataclass
class Report:
    acked_valid: int = 0
    acked_bad: int = 0
    delivered_records: int = 0
    delivered_unique: int = 0
    duplicates: int = 0
    missing_in_topic: list[str] = field(default_factory=list)
    extra_in_topic: list[str] = field(default_factory=list)
    missing_in_store: list[str] = field(default_factory=list)
    dlq_records: int = 0
    missing_in_dlq: list[tuple[int, int]] = field(default_factory=list)
    order_violations: list[str] = field(default_factory=list)
    wait: str = ""  # how waiting for the pipeline to catch up ended (wait_processed)

    @property
    def ok(self) -> bool:
        return not (self.missing_in_topic or self.extra_in_topic or self.missing_in_store or self.missing_in_dlq
                    or self.order_violations)

    def __str__(self) -> str:
        d = {k: (v if not isinstance(v, list) else f"{len(v)} {v[:5]}") for k, v in self.__dict__.items()}
        return "reconciliation: " + json.dumps(d)


def wait_processed(s: Settings, sent: list[Sent], timeout: float = 180.0, stall: float | None = None) -> str:
    """Until every acknowledged valid event is in the store and the DLQ holds as many records as
    bad events were acknowledged. Gives up early when neither count moved for ``stall`` s
    (default ``STALL_SECONDS``: a stuck pipeline fails in under a minute, not after ``timeout``).
    Returns how the wait ended, with the counts; the reconciliation then says what is missing."""
    stall = STALL_SECONDS if stall is None else stall
    r = redis.Redis.from_url(s.redis_url)
    valid = [x for x in sent if x.valid]
    bad = len(sent) - len(valid)
    start = last_change = time.monotonic()
    pending = valid
    progress: tuple[int, int] | None = None
    while True:
        pipe = r.pipeline(transaction=False)
        for x in pending:
            pipe.exists(f"{K.store_prefix(x.tenant)}ev:{x.event_id}")
        pending = [x for x, found in zip(pending, pipe.execute()) if not found]
        dlq = _dlq_count(s)
        now = time.monotonic()
        counts = f"{len(valid) - len(pending)} of {len(valid)} valid events in the store, DLQ {dlq} of {bad}"
        if not pending and dlq >= bad:
            return f"caught up in {now - start:.0f} s"
        if (len(pending), dlq) != progress:
            progress, last_change = (len(pending), dlq), now
        elif now - last_change > stall:
            return f"STALLED: no progress for {stall:.0f} s ({counts})"
        if now - start > timeout:
            return f"NOT CAUGHT UP in {timeout:.0f} s ({counts})"
        time.sleep(1.0)


def _dlq_count(s: Settings) -> int:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({**s.kafka(), "group.id": "reconcile-count", "log_level": 0})
    try:
        low, high = c.get_watermark_offsets(TopicPartition(s.dlq_topic, 0), timeout=10)
        return high - low
    finally:
        c.close()


def reconcile(s: Settings, sent: list[Sent]) -> Report:
    rep = Report()
    valid = {x.event_id: x for x in sent if x.valid}
    bad = {(x.partition, x.offset): x for x in sent if not x.valid}
    rep.acked_valid, rep.acked_bad = len(valid), len(bad)

    seen: dict[str, int] = {}
    first_order: dict[tuple[str, str], list[int]] = defaultdict(list)
    for tenant in sorted({x.tenant for x in sent}):
        msgs = read_topic(s.kafka(), s.tenant_topic(tenant),
                          expect=None, timeout=120, idle=4)
        for m in sorted(msgs, key=lambda m: (m.partition(), m.offset())):
            if m.value() is None:
                continue
            _, event_id = split_key(m.key())
            rep.delivered_records += 1
            seen[event_id] = seen.get(event_id, 0) + 1
            if seen[event_id] == 1 and event_id in valid:
                x = valid[event_id]
                first_order[(x.tenant, x.subject)].append(x.seq)
    rep.delivered_unique = len(seen)
    rep.duplicates = rep.delivered_records - rep.delivered_unique
    rep.missing_in_topic = sorted(set(valid) - set(seen))
    rep.extra_in_topic = sorted(set(seen) - set(valid))
    for (tenant, subject), seqs in first_order.items():
        if seqs != sorted(seqs):
            rep.order_violations.append(f"{tenant}/{subject}")

    r = redis.Redis.from_url(s.redis_url)
    pipe = r.pipeline(transaction=False)
    ids = list(valid)
    for i in ids:
        pipe.exists(f"{K.store_prefix(valid[i].tenant)}ev:{i}")
    rep.missing_in_store = [i for i, found in zip(ids, pipe.execute()) if not found]

    dlq = read_topic(s.kafka(), s.dlq_topic, expect=None,
                     timeout=60, idle=4)
    rep.dlq_records = len(dlq)
    sources = set()
    for m in dlq:
        d = json.loads(m.value())
        sources.add((d["source"]["partition"], d["source"]["offset"]))
    rep.missing_in_dlq = sorted(set(bad) - sources)
    return rep


def settle(s: Settings, load: Load) -> Report:
    """Stop the load, wait until the pipeline has caught up, reconcile (and print the counts)."""
    load.stop()
    waited = wait_processed(s, load.acked)
    rep = reconcile(s, load.acked)
    rep.wait = waited
    print(rep)
    return rep
