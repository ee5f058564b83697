"""The worker's health as numbers: consumer progress per partition, the privacy-request backlog,
the build; and the readiness verdict ``/ready`` answers. Pure bookkeeping: ``streams.app`` reads
the offsets (Faust, aiokafka, the requests reader) and hands them here, which sets the gauges of
``streams.ops.metric_catalogue``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from importlib import metadata
from typing import Callable, Iterable, Mapping

from streams.ops import metric_catalogue as M
from streams.ops.metrics import Metrics

#: /ready says no when this worker's own privacy-request partitions have had a request waiting this long.
log = logging.getLogger(__name__)

REQUESTS_STALE_SECONDS = 60.0
STALL_LOG_SECONDS = 30.0  # a partition with waiting records and no progress this long is logged (then every minute)


@dataclass(frozen=True)
class Offsets:
    """What the worker knows of one assigned partition. ``end``: the broker's end offset (high
    watermark) as the consumer last fetched it; ``processed``: the next offset of the last batch
    this worker finished; ``committed``: the group's committed offset (next to read); ``position``:
    the consumer's fetch position; ``last_read``: the offset of the last record the consumer handed
    to the stream. Any of them None when not known yet."""

    end: int | None
    processed: int | None = None
    committed: int | None = None
    position: int | None = None
    last_read: int | None = None


def lag_records(o: Offsets) -> int | None:
    """Records not yet processed, or None when not known (no end offset, no position of any kind).

    A transactional producer's commit marker (and an aborted transaction's records) take offsets
    but are never delivered: after the last record of a transaction the end stays above the next
    offset to process for ever. So when the consumer has fetched up to the end and every record it
    handed out is processed, what is left is no lag."""
    nxt = max((x for x in (o.processed, o.committed) if x is not None), default=o.position)
    if o.end is None or nxt is None:
        return None
    lag = max(0, o.end - nxt)
    if lag and o.position is not None and o.position >= o.end and o.last_read is not None and nxt > o.last_read:
        return 0
    return lag


class PartitionProgress:
    """Lag (records) and stalled time (seconds without progress while records wait) per assigned
    partition: the gauges CONSUMER_LAG, CONSUMER_STALLED and PARTITIONS_ASSIGNED."""

    def __init__(self, metrics: Metrics, clock: Callable[[], float] = time.monotonic) -> None:
        self.metrics = metrics
        self.clock = clock
        # (topic, partition) -> (next offset to process, when it last moved or the partition had no lag)
        self._seen: dict[tuple[str, int], tuple[int | None, float]] = {}
        self._topics: set[str] = set()
        self.stalled: dict[tuple[str, int], float] = {}
        self._logged: dict[tuple[str, int], float] = {}  # stalled seconds at the last warning

    def update(self, offsets: Mapping[tuple[str, int], Offsets]) -> None:
        """The assignment as it is now (every assigned partition, known offsets or not)."""
        now = self.clock()
        for tp in set(self._seen) - set(offsets):  # revoked: its series go
            del self._seen[tp]
            self.stalled.pop(tp, None)
            self._logged.pop(tp, None)
            for d in (M.CONSUMER_LAG, M.CONSUMER_STALLED):
                if {"topic": tp[0], "partition": str(tp[1])} in self.metrics.series(d):
                    self.metrics.remove(d, topic=tp[0], partition=tp[1])
        for tp, o in offsets.items():
            lag = lag_records(o)
            nxt = max((x for x in (o.processed, o.committed) if x is not None), default=None)
            prev = self._seen.get(tp)
            since = now if prev is None or not lag or prev[0] != nxt else prev[1]
            self._seen[tp] = (nxt, since)
            self.stalled[tp] = now - since if lag else 0.0
            if lag is not None:
                self.metrics.set(M.CONSUMER_LAG, lag, topic=tp[0], partition=tp[1])
            self.metrics.set(M.CONSUMER_STALLED, self.stalled[tp], topic=tp[0], partition=tp[1])
            self._log_stall(tp, o, lag)
        counts: dict[str, int] = {t: 0 for t in self._topics}
        for topic, _ in offsets:
            counts[topic] = counts.get(topic, 0) + 1
        self._topics = set(counts)
        for topic, n in counts.items():
            self.metrics.set(M.PARTITIONS_ASSIGNED, n, topic=topic)


    def _log_stall(self, tp: tuple[str, int], o: Offsets, lag: int | None) -> None:
        """A warning when a partition stalls (and each minute it stays so), with what the worker knows
        of it: whether the consumer stopped fetching (position, last read) or the worker stopped
        finishing batches (processed) is what an operator, or a test's report, needs to tell."""
        stalled = self.stalled[tp]
        if stalled < STALL_LOG_SECONDS:
            self._logged.pop(tp, None)
            return
        last = self._logged.get(tp)
        if last is not None and stalled - last < 60.0:
            return
        self._logged[tp] = stalled
        log.warning("partition %s[%d] stalled for %.0f s with %s records waiting: end %s, fetch position %s, "
                    "last read %s, processed up to %s, committed %s", tp[0], tp[1], stalled, lag, o.end, o.position,
                    o.last_read, o.processed, o.committed)


class PrivacyBacklog:
    """Unapplied privacy requests (``PrivacyRequestReader.behind``): PRIVACY_REQUESTS_PENDING and
    PRIVACY_REQUEST_OLDEST_AGE. The age is a lower bound: a request counts as waiting from the first
    update that saw its partition stopped at its offset (the reader stores no publish times)."""

    def __init__(self, metrics: Metrics, clock: Callable[[], float] = time.monotonic) -> None:
        self.metrics = metrics
        self.clock = clock
        self._since: dict[tuple[int, int], float] = {}  # (partition, applied offset) -> first seen behind
        self.age: dict[int, float] = {}  # partition -> seconds its oldest unapplied request waited

    def update(self, behind: Mapping[int, tuple[int, int]]) -> None:
        """``behind``: {partition: (applied, end)} of every partition not caught up."""
        now = self.clock()
        self._since = {(p, a): self._since.get((p, a), now) for p, (a, _) in behind.items()}
        self.age = {p: now - self._since[(p, a)] for p, (a, _) in behind.items()}
        self.metrics.set(M.PRIVACY_REQUESTS_PENDING, sum(end - a for a, end in behind.values()))
        self.metrics.set(M.PRIVACY_REQUEST_OLDEST_AGE, max(self.age.values(), default=0.0))

    def stale(self, partitions: Iterable[int], limit: float = REQUESTS_STALE_SECONDS) -> list[int]:
        """Partitions of ``partitions`` whose oldest unapplied request waited more than ``limit`` s."""
        return sorted(p for p in partitions if self.age.get(p, 0.0) > limit)


def policy_fingerprint(schemas: Iterable[Mapping]) -> str:
    """12 hex digits naming the schemas as loaded, their privacy annotations included (Avro's own
    fingerprint ignores them): a change of policy changes it."""
    texts = sorted(json.dumps(s, sort_keys=True, separators=(",", ":")) for s in schemas)
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()[:12]


def set_build_info(metrics: Metrics, schemas: list[Mapping]) -> None:
    try:
        version = metadata.version("streams")
    except metadata.PackageNotFoundError:
        version = "unknown"
    metrics.set(M.BUILD_INFO, 1, version=version, schemas=len(schemas), policy=policy_fingerprint(schemas))


def readiness(runtime_built: bool, redis_ok: bool, assigned: int, stale_requests: list[int], raw_topic: str
              ) -> list[str]:
    """The reasons the worker is not ready (none: ready). Liveness (``/live``) asks none of this: a
    dependency's blip must not restart every worker."""
    if not runtime_built:
        return ["starting: the worker's clients are not built yet"]
    reasons = []
    if not redis_ok:
        reasons.append("redis does not answer")
    if not assigned:
        reasons.append(f"no partition of {raw_topic} assigned (rebalancing, or more workers than partitions)")
    if stale_requests:
        reasons.append(f"privacy requests of own partitions {stale_requests} waiting over "
                       f"{REQUESTS_STALE_SECONDS:.0f} s")
    return reasons
