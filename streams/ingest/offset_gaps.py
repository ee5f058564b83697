"""Records of ``events.raw`` processed in offset order, none skipped, whatever Faust hands over.

Why: Faust (0.15) drops records its stream reads during a rebalance (with the previous generation's
id, or while flow control is paused) and expects the seek after the rebalance to read them again;
when they were read after that seek, they are never read again. The commit guard
(``streams.app._ReadCommittedConsumer``) keeps them from being committed past, but the later
records would be processed first: a subject's events out of order. So the ingest agent checks each
batch against the next offset it expects per partition (``PartitionCursor``):

* the next record of a partition is the one expected, or one further (a transaction's commit
  marker takes an offset and is never delivered): processed;
* further ahead: the offsets between are read with a plain read_committed consumer
  (``GapReader``). None there (an aborted transaction, markers): processed. Records there: Faust
  dropped them; the partition's records from there on are held back (not processed, not marked
  processed) and the partition is read again from the expected offset, so they come in order.

The expected offset of a partition starts at its committed offset (or its log start, which
``_ReadCommittedConsumer`` makes the committed one), and the cursor starts over at every new
assignment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from confluent_kafka import Consumer, TopicPartition

from streams.connections import KafkaTarget, consumer_config
from streams.ingest.batch import RawRecord

TP = tuple[str, int]


@dataclass
class Hole:
    """Offsets ``expected`` .. ``first - 1`` of a partition hold records the worker was not given."""
    topic: str
    partition: int
    expected: int
    first: int


@dataclass
class PartitionCursor:
    """``start_of(tp)``: where a partition of this assignment starts (its committed offset), or None.
    ``holds_records(topic, partition, lo, hi)``: whether offsets lo .. hi-1 hold any record."""
    start_of: Callable[[TP], int | None]
    holds_records: Callable[[str, int, int, int], bool]
    _next: dict[TP, int] = field(default_factory=dict)
    _generation: Any = None

    def new_assignment(self, generation: Any) -> None:
        """Start over when the consumer's generation changed (partitions moved, seeks happened)."""
        if generation != self._generation:
            self._generation = generation
            self._next.clear()

    def split_and_gaps(self, records: Sequence[RawRecord]) -> tuple[list[RawRecord], list[Hole], list[Hole]]:
        """The records to process now (in order); the holes whose partitions are held back from
        there (records the worker was not given); the gaps found empty (nothing to deliver there).
        Blocking (``holds_records`` reads the broker): call in a thread."""
        by_tp: dict[TP, list[RawRecord]] = {}
        for r in records:
            by_tp.setdefault((r.topic, r.partition), []).append(r)
        keep: set[int] = set()
        holes: list[Hole] = []
        empty: list[Hole] = []
        for tp, recs in by_tp.items():
            nxt = self._next.get(tp)
            if nxt is None:
                nxt = self.start_of(tp)
            for r in sorted(recs, key=lambda x: x.offset):
                if nxt is not None and r.offset < nxt:
                    continue  # read again after a seek back: done already
                if nxt is not None and r.offset > nxt + 1:
                    if self.holds_records(tp[0], tp[1], nxt, r.offset):
                        holes.append(Hole(tp[0], tp[1], nxt, r.offset))
                        break
                    empty.append(Hole(tp[0], tp[1], nxt, r.offset))
                keep.add(id(r))
                nxt = r.offset + 1
            if nxt is not None:
                self._next[tp] = nxt
        return [r for r in records if id(r) in keep], holes, empty


class GapReader:
    """Whether a range of offsets of a partition holds records a read_committed consumer delivers."""

    def __init__(self, target: KafkaTarget, timeout: float = 5.0) -> None:
        self._consumer = Consumer(consumer_config(target, "streams-gap-check", {
            "isolation.level": "read_committed", "enable.auto.commit": False}))
        self.timeout = timeout

    def __call__(self, topic: str, partition: int, lo: int, hi: int) -> bool:
        self._consumer.assign([TopicPartition(topic, partition, lo)])
        try:
            for msg in self._consumer.consume(1, self.timeout):
                if msg.error() is None:
                    return msg.offset() < hi
            # Nothing within the timeout: the broker did not answer; count it as records (held back
            # and read again: never a record lost on a guess).
            return True
        finally:
            self._consumer.unassign()

    def close(self) -> None:
        self._consumer.close()

