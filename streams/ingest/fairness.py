"""Fair sharing of the worker among tenants: a tenant that floods its raw topic cannot starve the others.

The problem: the tenant raw consumer (``streams.ingest.tenant_raw``) gets every tenant's
records from one librdkafka queue, in fetch order. A tenant that publishes faster than the
worker processes builds a backlog in that queue (librdkafka prefetches up to
``queued.max.messages.kbytes`` per partition), and every other tenant's new events wait
behind all of it: their latency grows with the flooder's backlog, without bound.

The design: the worker takes what the consumer returns into one FIFO buffer per raw topic
(each tenant has its own, ``events.raw.<t>``), and builds each batch by max-min fair
sharing over the buffers that hold records (``fair_take``): every tenant with records gets
an equal share of the batch, a share a tenant does not use goes to the others, so a light
tenant's events all go into the next batch and a heavy tenant gets the rest. While more than
one tenant is active (had records waiting in the last ``RECENT_SECONDS``), no tenant gives a
batch more than a quantum (``batch_size // QUANTUM_DIVISOR``): a light tenant's events wait for
the batch in progress and then their own, so batches stay short while tenants compete, at
some cost in the heavy tenant's throughput (per-batch overhead); a tenant alone gets full
batches. A tenant whose
buffer holds ``high_water`` records or more has its partitions paused in the consumer
(librdkafka ``pause``: it stops fetching them and drops what it had prefetched of them; ``resume``
fetches again from the position after the last record the worker took), and is resumed when
its buffer is down to ``low_water``. So the flooder's backlog stays in Kafka, not in the
queue in front of the others, and the worker's memory is bounded.

Guarantees kept:

- per-subject order: a subject's events are in one partition of its tenant's raw topic
  (keyed by tenant/subject); a buffer is a FIFO per topic that is only ever taken from its
  front, and the consumer returns a partition's records in order (also across a pause);
- at least once: offsets are committed only for records a batch took and ``handle`` finished
  (``next_offsets`` of the batch); records still buffered have higher offsets in their
  partition than anything committed, so a crash re-reads them; on a rebalance the buffered
  records of revoked partitions are dropped (``drop_partitions``) and their new owner reads
  them from the committed offset.

The shared ``events.raw`` topic (read by the Faust agent) is for the pipeline's own,
trusted producers and is not shared out here: a Faust ``take_events`` batch is
acknowledged when the agent's loop body ends, so deferring part of it would lose the
deferred records on a crash. The two paths take the pipeline's lock in turn.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable, Generic, Hashable, Iterable, TypeVar

#: While several tenants are active, a tenant gives at most batch_size // QUANTUM_DIVISOR records to a batch.
QUANTUM_DIVISOR = 5
#: A tenant is active for this long after it last had records waiting.
RECENT_SECONDS = 2.0

M = TypeVar("M")


def fair_take(queues: dict[Hashable, deque], limit: int, start: int = 0, cap: int | None = None) -> list:
    """Up to ``limit`` items from the front of ``queues``, shared max-min fairly: each non-empty
    queue gets ``limit // n`` (at least one) per round, what a queue cannot use goes round
    again to the others; no queue gives more than ``cap`` in all. ``start`` rotates who gets
    the remainder first. Items of one queue keep their order; the result lists each round's
    items queue by queue."""
    out: list = []
    keys = [k for k in queues if queues[k]]
    if not keys or limit <= 0:
        return out
    start %= len(keys)
    keys = keys[start:] + keys[:start]
    given = dict.fromkeys(keys, 0)
    room = {k: len(queues[k]) if cap is None else min(cap, len(queues[k])) for k in keys}
    remaining = limit
    while remaining > 0 and keys:
        share = max(1, remaining // len(keys))
        still = []
        for k in keys:
            if remaining <= 0:
                break
            q = queues[k]
            n = min(share, room[k] - given[k], remaining)
            for _ in range(n):
                out.append(q.popleft())
            given[k] += n
            remaining -= n
            if given[k] < room[k]:
                still.append(k)
        keys = still
    return out


class FairBuffer(Generic[M]):
    """Per-topic FIFO buffers of consumed records, fair batches, and the pause/resume decisions.

    Pure bookkeeping: the caller applies ``to_pause``/``to_resume`` to its consumer. Not
    thread-safe: one thread (the consumer's) uses it.
    """

    def __init__(self, batch_size: int, high_water: int | None = None, low_water: int | None = None,
                 quantum: int | None = None, recent_seconds: float = RECENT_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.batch_size = max(1, batch_size)
        # While more than one tenant is active, no tenant gives more than this to a batch.
        self.quantum = max(1, quantum if quantum is not None else self.batch_size // QUANTUM_DIVISOR)
        self.recent_seconds = recent_seconds
        self._clock = clock
        self._last_seen: dict[str, float] = {}  # topic -> when it last had records
        self.high_water = high_water if high_water is not None else 2 * self.batch_size
        self.low_water = low_water if low_water is not None else self.batch_size // 2
        if not 0 <= self.low_water < self.high_water:
            raise ValueError("need 0 <= low_water < high_water")
        self._queues: dict[str, deque[M]] = {}
        self._partitions: dict[str, set[int]] = {}  # partitions seen per topic (what pausing a topic pauses)
        self._paused: set[tuple[str, int]] = set()
        self._next: dict[tuple[str, int], int] = {}  # per partition: the offset after the last buffered
        self._turn = 0

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def depth(self, topic: str) -> int:
        q = self._queues.get(topic)
        return len(q) if q else 0

    def add(self, records: Iterable[M]) -> int:
        """Buffer ``records`` (consumer messages: ``topic()``, ``partition()``, ``offset()``). A record
        at or below an offset already buffered of its partition (a re-fetch after ``resume``) is
        skipped: each offset is handed out once. Returns how many were skipped."""
        skipped = 0
        for r in records:
            t, p, o = r.topic(), r.partition(), r.offset()  # type: ignore[attr-defined]
            if o < self._next.get((t, p), -1):
                skipped += 1
                continue
            self._next[(t, p)] = o + 1
            self._queues.setdefault(t, deque()).append(r)
            self._partitions.setdefault(t, set()).add(p)
        return skipped

    def active(self) -> set[str]:
        """Topics that had records within the last ``recent_seconds``."""
        now = self._clock()
        for t, q in self._queues.items():
            if q:
                self._last_seen[t] = now
        for t in [t for t, at in self._last_seen.items() if now - at > self.recent_seconds]:
            del self._last_seen[t]
        return set(self._last_seen)

    def take(self) -> list[M]:
        """The next batch: up to ``batch_size`` records, fairly shared among topics with records;
        while more than one tenant is active, at most ``quantum`` of each (short batches, so a
        light tenant's next events wait for little of a heavy tenant's work)."""
        cap = self.quantum if len(self.active()) > 1 else None
        batch = fair_take(self._queues, self.batch_size, self._turn, cap)  # type: ignore[arg-type]
        self._turn += 1
        for t in [t for t, q in self._queues.items() if not q and t not in self.paused]:
            del self._queues[t]
        return batch

    @property
    def paused(self) -> set[str]:
        """Topics with paused partitions."""
        return {t for t, _ in self._paused}

    def to_pause(self) -> list[tuple[str, int]]:
        """Partitions to pause now: those not yet paused of each topic whose buffer reached
        ``high_water`` (also a partition first seen while its topic is over); marks them paused."""
        out = []
        for t, q in self._queues.items():
            if len(q) >= self.high_water or (t in self.paused and len(q) > self.low_water):
                out.extend((t, p) for p in sorted(self._partitions.get(t, ())) if (t, p) not in self._paused)
        self._paused.update(out)
        return out

    def to_resume(self) -> list[tuple[str, int]]:
        """Partitions to resume now (their topic's buffer is down to ``low_water``); marks them running."""
        out = sorted((t, p) for t, p in self._paused if self.depth(t) <= self.low_water)
        self._paused.difference_update(out)
        return out

    def drop_partitions(self, partitions: Iterable[tuple[str, int]]) -> int:
        """Forget the buffered records and pause marks of ``partitions`` (revoked: their new owner
        re-reads them from the committed offset; a partition assigned again starts unpaused).
        Returns how many records were dropped."""
        gone = set(partitions)
        self._paused -= gone
        for tp in gone:
            self._next.pop(tp, None)
        n = 0
        for t in {t for t, _ in gone}:
            q = self._queues.get(t)
            if q:
                keep = deque(r for r in q if (t, r.partition()) not in gone)  # type: ignore[attr-defined]
                n += len(q) - len(keep)
                self._queues[t] = keep
            parts = self._partitions.get(t)
            if parts is not None:
                parts -= {p for tt, p in gone if tt == t}
                if not parts:
                    self._partitions.pop(t, None)
            if not self._queues.get(t) and t not in self.paused:
                self._queues.pop(t, None)
        return n
