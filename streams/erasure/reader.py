"""Reading privacy requests: read ``privacy.requests`` from the offset applied so far and carry each out
(``streams.erasure.executor``).

Why not a Faust agent: a Faust worker has one consumer for all its topics,
and an agent that does not take events (the ingest agent waiting for requests
to be applied) fills its buffer and stops the fetcher for every topic, the
requests included: measured as a deadlock under load. So requests are read
here, with a consumer of our own (manual assignment, no group), by the worker
that owns the same partition number of ``events.raw``: before each ingest
batch (under the worker's privacy lock, so batches and requests of a worker
never interleave) and on a 100 ms timer when no events flow.

Progress is the ``privacy:applied:<topic>:<partition>`` offset in Redis,
moved forward only after a request is fully carried out; a Redis lease per
partition keeps two workers (during a rebalance) from applying the same
partition at once. A request replayed after a crash runs again (every step is
idempotent; a completed request's receipt short-cuts it).
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Iterable

import redis
from confluent_kafka import Consumer, IsolationLevel, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from streams.connections import KafkaTarget, admin_config, consumer_config
from streams.consent.exceptions import InvalidRequest, RequestsNotApplied
from streams.consent.requests import PrivacyRequest, parse
from streams.consent.store import ConsentStore
from streams.dlq.reasons import Reason
from streams.dlq.record import DlqSealer, default_sealer
from streams.keyspace import request_reader_lease_key
from streams.erasure.executor import PrivacyRequestExecutor
from streams.erasure.parking import RETRY_S, ParkedRequests
from streams.errors import TenantFault
from streams.records import Rejected, SourceRef, withhold
from streams.ops import metric_catalogue as M
from streams.ops.metrics import Metrics
from streams.sinks.kafka_sink import KafkaSink, OutRecord

log = logging.getLogger(__name__)

_RELEASE_LUA = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
LEASE_MS = 30_000


_LEADER_MOVING = frozenset({KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE})
_LEADER_RETRIES = 10


class EndOffsets:
    """Last stable offsets of a topic's partitions, in one ListOffsets round trip.

    The stable end (read_committed), not the high watermark: a producer may write the topic in a
    transaction, and a record of an open transaction cannot be read yet (nor one of an aborted
    one, ever). Waiting for the high watermark behind an open transaction stopped every tenant's
    events until it ended; a request of a committed transaction is applied once it commits."""

    def __init__(self, bootstrap: KafkaTarget, topic: str) -> None:
        self.topic = topic
        self._admin = AdminClient(admin_config(bootstrap))
        md = self._admin.list_topics(topic, timeout=30)
        if topic not in md.topics or md.topics[topic].error is not None:
            raise RequestsNotApplied(f"topic {topic} is not available")
        self.partitions = sorted(md.topics[topic].partitions)

    def __call__(self, partitions: Iterable[int] | None = None) -> dict[int, int]:
        ps = self.partitions if partitions is None else sorted(set(partitions) & set(self.partitions))
        if not ps:
            return {}
        # A partition whose leader is moving (a topic just created, a broker just restarted) answers
        # NOT_LEADER for a moment: asked again within a second instead of holding a batch back.
        for attempt in range(_LEADER_RETRIES + 1):
            futures = self._admin.list_offsets({TopicPartition(self.topic, p): OffsetSpec.latest() for p in ps},
                                               isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=10)
            try:
                return {tp.partition: f.result().offset for tp, f in futures.items()}
            except KafkaException as exc:  # the broker away or electing leaders: the caller holds back
                err = exc.args[0]
                if attempt < _LEADER_RETRIES and err.code() in _LEADER_MOVING:
                    time.sleep(0.1)
                    continue
                raise RequestsNotApplied(f"end offsets of {self.topic} unavailable: {err.str()}") from None
        raise AssertionError("unreachable")


class PrivacyRequestReader:
    """Reads ``privacy.requests`` partition by partition (under a Redis lease) and hands each request
    to the executor; invalid ones go to the DLQ. Progress moves only after a request is done."""

    def __init__(self, bootstrap: KafkaTarget, topic: str, dlq_topic: str, tenants: frozenset[str], client: redis.Redis,
                 consent: ConsentStore, handler: PrivacyRequestExecutor, kafka: KafkaSink, metrics: Metrics,
                 dlq: DlqSealer | None = None, parking: ParkedRequests | None = None) -> None:
        """``parking``: where requests stopped by a fault of their tenant wait (without it such a
        request is retried in place, holding every tenant back)."""
        self.topic = topic
        self.dlq = dlq or default_sealer()
        self.dlq_topic = dlq_topic
        self.tenants = tenants
        self.client = client
        self.consent = consent
        self.handler = handler
        self.kafka = kafka
        self.metrics = metrics
        self.ends = EndOffsets(bootstrap, topic)
        self._consumer = Consumer(consumer_config(bootstrap, "streams-requests-reader", {
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",  # never an aborted request, never one of an open transaction
        }))
        self._token = uuid.uuid4().hex
        self._drained = False  # pending erasures a previous run left (see catch_up)
        self.parking = parking
        self._next_retry = 0.0  # monotonic time of the next retry of parked requests
        self.retry_every_s = RETRY_S

    def behind(self, partitions: Iterable[int] | None = None) -> dict[int, tuple[int, int]]:
        """Partitions whose requests are not all applied: {partition: (applied, end)}."""
        ends = self.ends(partitions)
        applied = self.consent.applied(self.topic, ends)
        return {p: (applied[p], end) for p, end in ends.items() if applied[p] < end}

    def wait_applied(self, partitions: Iterable[int], timeout: float = 10.0) -> None:
        """Wait until the requests published so far on ``partitions`` (other workers') are applied."""
        ps = list(partitions)
        if not ps:
            return
        deadline = time.monotonic() + timeout
        ends = self.ends(ps)
        while True:
            applied = self.consent.applied(self.topic, ends)
            behind = [p for p, end in ends.items() if applied[p] < end]
            if not behind:
                return
            if time.monotonic() > deadline:
                raise RequestsNotApplied(f"privacy requests not yet applied on partitions {behind}")
            time.sleep(0.005)

    def wait_or_apply(self, partitions: Iterable[int], patience: float = 2.0) -> int:
        """Wait up to ``patience`` s for the owners of ``partitions`` to apply their requests, then
        apply what is still missing here. The owner may be dead (killed, or expelled while its
        partitions move): a batch that only waited would hold back for ever, and with it the
        rebalance that hands those partitions over (Faust revokes after the batch). The lease keeps
        two workers from applying one partition at once; a dead owner's lease expires in LEASE_MS."""
        ps = list(partitions)
        try:
            self.wait_applied(ps, timeout=patience)
            return 0
        except RequestsNotApplied:
            return self.catch_up(ps)

    def catch_up(self, partitions: Iterable[int]) -> int:
        """Apply every request of ``partitions`` published so far. Raises RequestsNotApplied when
        another worker holds a partition's lease (the caller retries); other faults propagate."""
        done = self.retry_parked()  # before new requests: a tenant's requests keep their order
        for p, (applied, end) in sorted(self.behind(partitions).items()):
            lease = request_reader_lease_key(self.topic, p)
            if not self.client.set(lease, self._token, nx=True, px=LEASE_MS):
                raise RequestsNotApplied(f"partition {p} of {self.topic} is being applied by another worker")
            try:
                done += self._apply_range(p, self.consent.applied(self.topic, [p])[p], end)
            finally:
                self.client.eval(_RELEASE_LUA, 1, lease, self._token)
        if done or not self._drained:
            # AOF rewrite + receipts of the erasures just carried out (and of any a crash left
            # pending): one rewrite for all, here and not from a loop of its own (a separate
            # 100 ms loop raised end-to-end latency about tenfold). Also once at start: a worker
            # killed after an erasure's deletes but before its receipt leaves it pending, and no
            # new request may come to trigger the rewrite.
            self.handler.finish_pending()
            self._drained = True
        return done

    def _apply_range(self, partition: int, start: int, end: int) -> int:
        n = 0
        tp = TopicPartition(self.topic, partition, start)
        self._consumer.assign([tp])
        deadline = time.monotonic() + 30
        position = start
        while position < end:
            if time.monotonic() > deadline:
                raise RequestsNotApplied(f"could not read {self.topic}[{partition}] up to {end}")
            # Ask for exactly what is missing: consume() waits its whole timeout for a larger count.
            for msg in self._consumer.consume(min(100, end - position), 0.5):
                if msg.error():
                    continue
                self._apply_one(msg.value(), msg.key(), partition, msg.offset())
                self.consent.mark_applied(self.topic, partition, msg.offset() + 1)
                position = msg.offset() + 1
                n += 1
            # Transaction markers and aborted records are never delivered, but the consumer's
            # position moves past them: the partition is done up to there (else a trailing commit
            # marker would keep it "behind" for ever).
            after = self._consumer.position([TopicPartition(self.topic, partition)])[0].offset
            if after > position:
                position = min(after, end)
                self.consent.mark_applied(self.topic, partition, position)
        return n

    def _apply_one(self, value: bytes | None, key: bytes | None, partition: int, offset: int) -> None:
        try:
            req = parse(value)
            if key != req.key:
                raise InvalidRequest("record key must be '<tenant>/<subject>' of the request")
            if req.tenant not in self.tenants:
                raise InvalidRequest("tenant is not an onboarded tenant")
        except InvalidRequest as exc:
            rej = Rejected(reason=Reason.INVALID_REQUEST, detail=str(exc), source=SourceRef(self.topic, partition, offset),
                           payload_size=len(value or b""), payload=withhold(value), key=withhold(key))
            self.kafka.deliver([OutRecord(self.dlq_topic, None, self.dlq.encode(rej),
                                          [("reason", rej.reason.value.encode())])])
            self.metrics.inc(M.EVENTS_DLQ, tenant=M.NO_TENANT, reason=rej.reason.value)
            return
        if self.parking is not None and self.parking.is_parked(req.tenant):
            self._park(req, value, "behind earlier parked requests of the tenant")  # keeps their order
            return
        started = time.monotonic()
        try:
            self.handler.handle(req)
        except Exception as exc:
            if self.parking is None or not isinstance(exc, TenantFault):
                raise  # a fault of the system: the caller holds back and retries
            self._park(req, value, str(exc))
            return
        self.metrics.inc(M.PRIVACY_REQUESTS, type=req.type.name)
        log.info("privacy request %s (%s) done in %.0f ms", req.request_id, req.type.name,
                 (time.monotonic() - started) * 1000)

    def _park(self, req: PrivacyRequest, value: bytes | None, reason: str) -> None:
        assert self.parking is not None and value is not None
        parked = self.parking.park(req.tenant, value, reason)  # before the offset moves past it
        self.handler.note_parked(req, reason)
        self.metrics.inc(M.PRIVACY_REQUESTS_PARKED, tenant=req.tenant)
        log.error("privacy request %s (%s) of tenant %s parked (%d parked for the tenant): %s. The tenant's "
                  "events wait in the DLQ until it is repaired; the other tenants go on", req.request_id, req.type.name,
                  req.tenant, parked, reason)

    def retry_parked(self, force: bool = False) -> int:
        """Carry out parked requests, each tenant's oldest first, until one fails again; at most every
        ``retry_every_s`` (``force``: now). Returns how many were carried out. A fault of the system raises."""
        if self.parking is None:
            return 0
        now = time.monotonic()
        if not force and now < self._next_retry:
            return 0
        self._next_retry = now + self.retry_every_s
        done = 0
        for tenant in sorted(self.parking.tenants()):
            if tenant not in self.tenants:
                # Deleted (its list went with its data: only an empty entry is left to unlist), or
                # onboarded after this worker last read the tenant directory: its parked erasures
                # must wait for a worker that knows it, never be dropped on this worker's word.
                self.parking.forget_if_empty(tenant)
                continue
            while True:
                try:
                    parked = self.parking.oldest(tenant)
                    if parked is None:
                        self.parking.forget_if_empty(tenant)  # an empty list left listed (a crash between steps)
                        break
                    self.handler.handle(parse(parked.value))
                except Exception as exc:
                    if not isinstance(exc, TenantFault):
                        raise
                    # Not repaired yet: the tenant stays parked, the next tenant is tried.
                    log.warning("tenant %s: its parked privacy requests still fail (%s)", tenant, exc)
                    break
                left = self.parking.done(tenant, parked)
                done += 1
                self.metrics.inc(M.PRIVACY_REQUESTS_UNPARKED, tenant=tenant)
                if left == 0:
                    log.warning("tenant %s: every parked privacy request is carried out; its events flow again",
                                tenant)
                    break
        return done

    def close(self) -> None:
        self._consumer.close()
