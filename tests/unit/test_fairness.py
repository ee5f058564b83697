"""Fair sharing of batches among tenants (streams.ingest.fairness), pure logic: shares, order,
nothing lost or handed out twice, pause/resume decisions, revoked partitions.

The worker with a flooding tenant is tests/e2e/test_fairness.py; latencies are in bench/fairness_bench.py.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from dataclasses import dataclass

import pytest

from streams.ingest.fairness import FairBuffer, fair_take


@dataclass(frozen=True)
class Msg:
    t: str
    p: int
    o: int

    def topic(self) -> str:
        return self.t

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o


def msgs(topic: str, n: int, partitions: int = 1, start: int = 0) -> list[Msg]:
    out, nxt = [], {p: start for p in range(partitions)}
    for i in range(n):
        p = i % partitions
        out.append(Msg(topic, p, nxt[p]))
        nxt[p] += 1
    return out


def test_fair_take_equal_shares_and_leftovers() -> None:
    q = {"a": deque(range(1000)), "b": deque(range(10)), "c": deque(range(10))}
    got = fair_take(q, 100)
    assert len(got) == 100
    # The light queues are emptied; the heavy one gets what they left.
    assert (len(q["a"]), len(q["b"]), len(q["c"])) == (920, 0, 0)


def test_fair_take_all_heavy_split_evenly() -> None:
    q = {k: deque(range(1000)) for k in "abc"}
    fair_take(q, 300)
    assert [1000 - len(q[k]) for k in "abc"] == [100, 100, 100]
    # The remainder goes round: never more than one apart.
    fair_take(q, 100)
    taken = sorted(1000 - len(q[k]) for k in "abc")
    assert taken[-1] - taken[0] <= 1 and sum(taken) == 400


def test_fair_take_cap() -> None:
    q = {"a": deque(range(1000)), "b": deque(range(10))}
    assert len(fair_take(q, 100, cap=30)) == 40
    assert (len(q["a"]), len(q["b"])) == (970, 0)


def test_fair_take_edge_cases() -> None:
    assert fair_take({}, 10) == []
    assert fair_take({"a": deque()}, 10) == []
    assert fair_take({"a": deque([1, 2])}, 0) == []
    assert fair_take({"a": deque([1, 2, 3])}, 10) == [1, 2, 3]
    q = {k: deque([k]) for k in "abcdef"}
    assert len(fair_take(q, 4)) == 4  # more queues than room: one each until full


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_light_tenant_waits_for_one_short_batch_at_most() -> None:
    clock = Clock()
    buf: FairBuffer[Msg] = FairBuffer(100, quantum=20, clock=clock)
    buf.add(msgs("events.raw.heavy", 5000))
    buf.add(msgs("events.raw.light", 5))
    batch = buf.take()
    # Two tenants active: at most a quantum of the heavy one, all of the light one.
    assert Counter(m.t for m in batch) == {"events.raw.heavy": 20, "events.raw.light": 5}
    # The light tenant is still active (it had records 1 s ago): the heavy one's batches stay short.
    clock.now += 1.0
    assert Counter(m.t for m in buf.take()) == {"events.raw.heavy": 20}
    # Alone for longer than RECENT_SECONDS: full batches again (no throughput lost without contention).
    clock.now += 2.5
    assert Counter(m.t for m in buf.take()) == {"events.raw.heavy": 100}
    assert buf.active() == {"events.raw.heavy"}


def test_without_a_quantum_cap_the_heavy_tenant_fills_the_rest() -> None:
    buf: FairBuffer[Msg] = FairBuffer(100, quantum=100)
    buf.add(msgs("events.raw.heavy", 5000))
    buf.add(msgs("events.raw.light", 5))
    assert Counter(m.t for m in buf.take()) == {"events.raw.heavy": 95, "events.raw.light": 5}


def test_default_quantum() -> None:
    assert FairBuffer(500).quantum == 100 and FairBuffer(3).quantum == 1


def test_order_kept_per_partition_and_nothing_lost_or_doubled() -> None:
    rnd = random.Random(7)
    buf: FairBuffer[Msg] = FairBuffer(64)
    produced = {t: msgs(t, n, partitions=3) for t, n in (("events.raw.a", 3000), ("events.raw.b", 300),
                                                         ("events.raw.c", 40))}
    feeds = {t: list(ms) for t, ms in produced.items()}
    out: list[Msg] = []
    while any(feeds.values()) or len(buf):
        for t, f in feeds.items():  # arrivals interleaved in random chunks, as fetches come
            k = rnd.randint(0, 50)
            buf.add(f[:k])
            del f[:k]
        out.extend(buf.take())
    assert len(out) == sum(len(v) for v in produced.values())
    assert len(set(out)) == len(out)
    for t, ms in produced.items():
        for p in range(3):
            assert [m.o for m in out if m.t == t and m.p == p] == [m.o for m in ms if m.p == p]


def test_refetched_records_are_not_handed_out_twice() -> None:
    buf: FairBuffer[Msg] = FairBuffer(10)
    buf.add(msgs("events.raw.a", 20))
    first = buf.take()
    # A resume that fetched again from an older position: offsets already buffered are skipped.
    assert buf.add(msgs("events.raw.a", 25)) == 20
    rest = buf.take() + buf.take() + buf.take()
    assert [m.o for m in first + rest] == list(range(25))


def test_pause_over_high_water_resume_at_low_water() -> None:
    buf: FairBuffer[Msg] = FairBuffer(100, high_water=200, low_water=50, quantum=100)
    buf.add(msgs("events.raw.heavy", 250, partitions=2))
    buf.add(msgs("events.raw.light", 10))
    assert buf.to_pause() == [("events.raw.heavy", 0), ("events.raw.heavy", 1)]
    assert buf.to_pause() == []  # once
    assert buf.paused == {"events.raw.heavy"}
    buf.take()  # 90 heavy + 10 light: 160 left
    assert buf.to_resume() == []
    buf.take()  # 60 left
    assert buf.to_resume() == []
    buf.take()  # 0 left
    assert buf.to_resume() == [("events.raw.heavy", 0), ("events.raw.heavy", 1)]
    assert buf.paused == set()


def test_partition_seen_first_while_its_topic_is_paused_is_paused_too() -> None:
    buf: FairBuffer[Msg] = FairBuffer(10, high_water=20, low_water=5)
    buf.add(msgs("events.raw.heavy", 25))
    assert buf.to_pause() == [("events.raw.heavy", 0)]
    buf.add([Msg("events.raw.heavy", 1, 0)])
    assert buf.to_pause() == [("events.raw.heavy", 1)]


def test_revoked_partitions_are_forgotten() -> None:
    buf: FairBuffer[Msg] = FairBuffer(10, high_water=20, low_water=5)
    buf.add(msgs("events.raw.a", 40, partitions=2))
    buf.add(msgs("events.raw.b", 4))
    assert buf.to_pause() == [("events.raw.a", 0), ("events.raw.a", 1)]
    assert buf.drop_partitions([("events.raw.a", 0)]) == 20
    assert buf.depth("events.raw.a") == 20 and all(m.p == 1 for m in buf._queues["events.raw.a"])
    # Assigned again later: it starts unpaused, and its records (re-read from the commit) are taken again.
    assert ("events.raw.a", 0) not in {tp for tp in buf._paused}
    assert buf.add(msgs("events.raw.a", 2, start=0)) == 0
    assert buf.drop_partitions([("events.raw.a", 0), ("events.raw.a", 1), ("events.raw.b", 0)]) == 26
    assert len(buf) == 0 and buf.paused == set() and buf.take() == []


def test_bad_water_marks() -> None:
    with pytest.raises(ValueError):
        FairBuffer(10, high_water=5, low_water=5)
