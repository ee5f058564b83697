"""The audit topic: writing records synchronously and reading them back.

One partition
    The audit topic has exactly one partition. Kafka orders records only within
    a partition; with one, the topic is a single total order that every reader
    sees the same way, so "seq 12 comes after seq 11", "this chain started
    after that record" and "nothing was inserted between them" have a meaning.
    Audit volume (one record per privacy action or detokenization) is far
    below what one partition takes. ``AuditLog`` refuses a topic with more.

One chain per writer
    Several processes (workers, the CLI, the API) audit at the same time. A
    single shared chain would need them to agree on its head before each
    append (a lock or a transactional fencing protocol); without that two
    writers would both chain to the same head and fork it silently. Instead
    each ``AuditLog`` writes its own chain, ``chain = f"{actor}:{uuid4}"``, with
    its own ``seq`` and ``prev``; all chains interleave in the one partition
    and ``verify`` groups by chain. A new chain's first record carries an
    ``anchor``: the chain, seq and hash of the last authenticated record in
    the topic when it started (looking back from the high watermark), which
    ties the chains together.

Signed
    Every record is signed by the log's ``signer`` (the writer's current key,
    from ``streams.audit.keys.AuditKeyStore``) for the trail named like the
    topic. ``keyring`` (the published public keys, or a function returning
    them) lets the log anchor to and resume from authenticated records only;
    without it, only records of its own current key count. ``open_audit_log``
    builds all of it from the settings.

Resuming
    ``AuditLog(..., chain_id=X)`` continues chain X after a restart: it reads
    the topic backwards from the high watermark to X's last authenticated
    record and goes on from its seq and hash (X must be the same writer's).
    Only one process may write a chain id at a time; a second one forks it,
    which ``verify`` reports (duplicate seqs: foreign).

Synchronous, acknowledged appends
    ``append`` produces with an idempotent producer (acks=all) to partition 0
    and waits for the broker's acknowledgement before it returns, so a caller
    reports an action done only once it is audited. When the write fails or is
    not acknowledged in time, ``append`` raises ``AuditError`` and the log
    abandons its chain: the unacknowledged record may or may not be in the
    topic, and either way the abandoned chain verifies (it ends at seq n-1 or
    n). The next ``append`` starts a new chain. Never continuing a chain after
    an uncertain write is what keeps a late delivery from forking it.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any, Callable, Mapping, Union

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from streams.audit.chain import (
    AuditChain,
    authentication_problem,
    decode_record,
    encode_record,
    malformed,
    new_chain_id,
    record_hash,
)
from streams.audit.exceptions import AuditError
from streams.audit.signing import PublicKey, Signer
from streams.connections import KafkaTarget, consumer_config, producer_config

log = logging.getLogger(__name__)

DEFAULT_AUDIT_TOPIC = "audit"
AUDIT_PARTITION = 0

Record = dict[str, Any]
Positioned = tuple[tuple[int, int], Any]  # ((partition, offset), decoded record or None)
KeyringSource = Union[Mapping[str, PublicKey], Callable[[], Mapping[str, PublicKey]], None]
ANCHOR_LOOKBACK = 64  # records read back from the end to find one to anchor a new chain to


# ---------------------------------------------------------------- reading

def _consumer(target: KafkaTarget) -> Consumer:
    # assign() only: never joins the group or commits
    return Consumer(consumer_config(target, f"streams-audit-read-{uuid.uuid4().hex[:8]}",
                                    {"auto.offset.reset": "earliest"}))


def _partitions(consumer: Consumer, topic: str, timeout: float) -> list[int]:
    try:
        md = consumer.list_topics(topic, timeout=timeout)
    except KafkaException as exc:
        raise AuditError(f"cannot reach the broker to read audit topic {topic}: {exc}") from None
    t = md.topics.get(topic)
    if t is None or t.error is not None or not t.partitions:
        raise AuditError(f"audit topic {topic} does not exist")
    return sorted(t.partitions)


def _watermarks(consumer: Consumer, topic: str, partition: int, timeout: float) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout, cached=False)
        except KafkaException as exc:
            # Right after a topic's creation or a broker's start its leader may still be loading it.
            err = exc.args[0]
            transient = err.retriable() or err.code() in (KafkaError.NOT_LEADER_FOR_PARTITION,
                                                          KafkaError.LEADER_NOT_AVAILABLE,
                                                          KafkaError.UNKNOWN_TOPIC_OR_PART)
            if transient and time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            raise AuditError(f"cannot read the offsets of {topic}[{partition}]: {exc}") from None


def _read_range(consumer: Consumer, topic: str, partition: int, start: int, end: int,
                timeout: float) -> list[Positioned]:
    """Records at offsets [start, end) of one partition, in offset order."""
    out: list[Positioned] = []
    if start >= end:
        return out
    tp = TopicPartition(topic, partition, start)
    consumer.assign([tp])
    deadline = time.monotonic() + timeout
    try:
        while True:
            msgs = consumer.consume(num_messages=500, timeout=0.5)
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise AuditError(f"reading {topic}[{partition}] failed: {err.str()}")
                if m.offset() >= end:
                    return out
                out.append(((m.partition(), m.offset()), decode_record(m.value())))
            if out and out[-1][0][1] >= end - 1:
                return out
            if not msgs:
                # Offsets can have holes (transaction markers): the position says where reading is.
                pos = consumer.position([TopicPartition(topic, partition)])[0].offset
                if pos >= end:
                    return out
            if time.monotonic() > deadline:
                raise AuditError(f"timed out reading {topic}[{partition}] offsets {start}-{end - 1}")
    finally:
        consumer.unassign()


def read_all(bootstrap: KafkaTarget, topic: str = DEFAULT_AUDIT_TOPIC, timeout: float = 60.0) -> list[Positioned]:
    """Every record of the audit topic up to its current end, as ``((partition, offset), record)``.

    ``record`` is the decoded JSON, or None for a message that is not JSON.
    Partitions in order, then offsets: the order ``verify`` expects.
    """
    consumer = _consumer(bootstrap)
    try:
        out: list[Positioned] = []
        for p in _partitions(consumer, topic, timeout):
            low, high = _watermarks(consumer, topic, p, timeout)
            out.extend(_read_range(consumer, topic, p, low, high, timeout))
        return out
    finally:
        consumer.close()


def authentic(record: Any, keyring: Mapping[str, PublicKey], trail: str) -> bool:
    """Well formed, hash intact, and signed by a key of ``keyring`` for ``trail``."""
    return (malformed(record) is None and record_hash(record) == record["hash"]
            and authentication_problem(record, keyring, trail) is None)


# ---------------------------------------------------------------- writing

class AuditLog:
    """Appends signed audit records of one writer's chain to the audit topic, each acknowledged before it returns.

    ``actor`` names the writing process (``worker:<app_id>``, ``cli:<user>``);
    ``append`` may name another actor per record (``api-key:<id>`` in the API).
    ``signer`` is the writer's key (mandatory: records are always signed);
    ``keyring`` the published public keys, or a function returning them.
    Thread-safe: appends are serialized.
    """

    def __init__(self, bootstrap: KafkaTarget, topic: str = DEFAULT_AUDIT_TOPIC, actor: str = "streams", *,
                 signer: Signer, keyring: KeyringSource = None, chain_id: str | None = None,
                 timeout: float = 30.0) -> None:
        if not actor:
            raise AuditError("an audit log needs an actor")
        if not isinstance(signer, Signer):
            raise AuditError("an audit log needs its writer's signer: records are always signed")
        self.bootstrap = bootstrap
        self.topic = topic
        self.actor = actor
        self.signer = signer
        self._keyring_source = keyring
        self.timeout = timeout
        self.last_position: tuple[int, int] | None = None  # (partition, offset) of the last acknowledged record
        self._lock = threading.Lock()
        self._producer = self._new_producer()
        self._chain: AuditChain | None = self._open_chain(chain_id)

    @property
    def chain_id(self) -> str | None:
        """The chain the next record goes to (None between a failed append and the next one)."""
        return self._chain.chain_id if self._chain else None

    @property
    def head(self) -> tuple[int, str] | None:
        """(seq, hash) of the last record of the current chain; seq -1 before the first."""
        return self._chain.head if self._chain else None

    def _new_producer(self) -> Producer:
        ms = int(self.timeout * 1000)
        return Producer(producer_config(self.bootstrap, {
            "acks": "all",  # also implied by enable.idempotence; stated because the audit depends on it
            "linger.ms": 0,  # one record at a time, waited for: do not hold it back
            "message.timeout.ms": ms,
        }))

    def _keyring(self) -> Mapping[str, PublicKey]:
        source = self._keyring_source
        if source is None:
            return {self.signer.kid: self.signer.public}
        try:
            keyring = source() if callable(source) else source
        except Exception as exc:  # Redis away: anchor to and resume from this writer's own records only
            log.warning("audit: published keys unavailable (%s); only this writer's records count as authentic",
                        type(exc).__name__)
            return {self.signer.kid: self.signer.public}
        return {**keyring, self.signer.kid: self.signer.public}

    def _open_chain(self, chain_id: str | None) -> AuditChain:
        consumer = _consumer(self.bootstrap)
        try:
            partitions = _partitions(consumer, self.topic, self.timeout)
            if partitions != [AUDIT_PARTITION]:
                raise AuditError(f"audit topic {self.topic} has {len(partitions)} partitions; it must have exactly "
                                 "one (a single total order)")
            low, high = _watermarks(consumer, self.topic, AUDIT_PARTITION, self.timeout)
            last = _read_range(consumer, self.topic, AUDIT_PARTITION, max(low, high - ANCHOR_LOOKBACK), high,
                               self.timeout)
            keyring = self._keyring() if last else {}
            if chain_id is not None:
                tail = self._find_chain_tail(consumer, chain_id, low, high, last, keyring)
                if tail is not None:
                    chain = AuditChain.resume(tail, self.signer, trail=self.topic, keyring=keyring)
                    log.info("audit: resuming chain %s at seq %d", chain_id, chain.seq)
                    return chain
            anchor = None
            for (_, offset), record in reversed(last):
                if authentic(record, keyring, self.topic):
                    anchor = {"chain": record["chain"], "seq": record["seq"], "hash": record["hash"]}
                    if offset != high - 1:
                        log.warning("audit: the last records of %s do not authenticate; new chain anchored to "
                                    "offset %d", self.topic, offset)
                    break
            else:
                if last:
                    log.warning("audit: none of the last %d records of %s authenticates; new chain not anchored",
                                len(last), self.topic)
            return AuditChain(chain_id or new_chain_id(self.actor), self.signer, anchor=anchor, trail=self.topic)
        finally:
            consumer.close()

    def _find_chain_tail(self, consumer: Consumer, chain_id: str, low: int, high: int,
                         last: list[Positioned], keyring: Mapping[str, PublicKey]) -> Record | None:
        """The last authenticated record of ``chain_id``, reading backwards from the end in growing windows."""
        window, end, records = 64, high - len(last), last
        while True:
            for _, record in reversed(records):
                if (isinstance(record, dict) and record.get("chain") == chain_id
                        and authentic(record, keyring, self.topic)):
                    return record
            if end <= low:
                return None
            start = max(low, end - window)
            records = _read_range(consumer, self.topic, AUDIT_PARTITION, start, end, self.timeout)
            end, window = start, window * 2

    def append(self, action: str, tenant: str | None, subject_pseudonym: str | None, reason: str,
               details: Mapping[str, Any] | None = None, *, actor: str | None = None,
               at_ms: int | None = None) -> Record:
        """Write one audit record and return it once the broker acknowledged it.

        ``subject_pseudonym`` comes from ``streams.audit.chain.pseudonym``;
        ``reason`` and ``details`` must hold no personal data. Raises
        AuditError when the record is refused or not acknowledged: the caller
        must then not report the action as done.
        """
        with self._lock:
            if self._chain is None:
                self._chain = self._open_chain(None)
            record = self._chain.build(actor or self.actor, action, tenant, subject_pseudonym, reason, details, at_ms)
            result: dict[str, Any] = {}

            def on_delivery(err: KafkaError | None, msg: Any) -> None:
                result["err"] = err
                if err is None:
                    result["pos"] = (msg.partition(), msg.offset())

            try:
                self._producer.produce(self.topic, encode_record(record), self._chain.chain_id.encode(),
                                       partition=AUDIT_PARTITION, on_delivery=on_delivery)
            except (BufferError, KafkaException) as exc:
                # Nothing was queued: the chain is unchanged.
                raise AuditError(f"audit record not written to {self.topic}: {exc}") from None
            self._producer.flush(self.timeout + 5)  # message.timeout.ms fires first: the outcome is known
            err = result.get("err") if result else KafkaError(KafkaError._MSG_TIMED_OUT)
            if err is not None:
                abandoned, self._chain = self._chain.chain_id, None
                if err.fatal():
                    self._producer = self._new_producer()
                log.warning("audit: record not acknowledged (%s); chain %s abandoned", err.name(), abandoned)
                raise AuditError(f"audit record not acknowledged by {self.topic}: {err.str()}")
            self._chain.advance(record)
            self.last_position = result["pos"]
            return record

    def close(self) -> None:
        self._producer.flush(self.timeout)

    def __enter__(self) -> "AuditLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
