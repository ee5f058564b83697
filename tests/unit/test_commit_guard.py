"""The worker's Faust consumer never commits past a record it did not finish (streams.app
``_ReadCommittedConsumer``): Faust's own commit, run here on a consumer with only its bookkeeping
set, took the first run of finished offsets wherever it started, so records Faust dropped at a
rebalance were committed past (and then pruned): seen on the real stack, ~500 records lost."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace

from faust.types import TP
from intervaltree import IntervalTree

from streams.app import _ReadCommittedConsumer

RAW = TP("events.raw", 3)


def _consumer(committed: int | None, acked: list[int]) -> tuple[_ReadCommittedConsumer, list[dict]]:
    c = object.__new__(_ReadCommittedConsumer)  # Faust's commit bookkeeping only: no broker
    seeks: list[dict] = []
    c.app = SimpleNamespace(guarded_topics=frozenset({RAW.topic}))
    c._committed_offset = defaultdict(lambda: None, {RAW: committed})
    c._acked = defaultdict(list, {RAW: list(acked)})
    c._acked_index = defaultdict(set, {RAW: set(acked)})
    c._gap = defaultdict(IntervalTree)

    async def earliest_offsets(*tps):
        return {tp: 0 for tp in tps}

    async def seek_wait(offsets):
        seeks.append(dict(offsets))

    c.earliest_offsets = earliest_offsets
    c.seek_wait = seek_wait
    return c, seeks


def test_a_run_that_starts_where_the_partition_was_committed_is_committed() -> None:
    c, seeks = _consumer(100, list(range(100, 111)))
    assert c._new_offset(RAW) == 111 and not seeks


def test_one_offset_at_the_head_is_taken_for_a_transaction_marker() -> None:
    c, _ = _consumer(100, list(range(101, 111)))
    assert c._new_offset(RAW) == 111


def test_records_dropped_before_the_finished_ones_are_never_committed_past() -> None:
    c, seeks = _consumer(100, list(range(150, 161)))  # 100..149 read, dropped, never finished
    assert c._new_offset(RAW) is None
    # Read again (the ingest agent asks for it): 100..160 finished, the run from 100 is committed.
    c._acked[RAW] = list(range(100, 161))
    c._acked_index[RAW] = set(c._acked[RAW])
    assert c._new_offset(RAW) == 161


def test_a_gap_found_empty_is_committed_past() -> None:
    c, _ = _consumer(0, [2, 3, 4])  # offsets 0..1: an aborted transaction, never delivered
    assert c._new_offset(RAW) is None
    c.accept_gap(RAW.topic, RAW.partition, 0, 2)  # the agent read 0..1 and found nothing
    assert c._new_offset(RAW) == 5


def test_reading_again_seeks_once_per_interval() -> None:
    async def run() -> None:
        c, seeks = _consumer(100, [])
        await c.read_again(RAW.topic, RAW.partition, 100)
        await c.read_again(RAW.topic, RAW.partition, 100)  # within HOLE_SEEK_BACK_S: not again
        assert seeks == [{RAW: 100}]

    asyncio.run(run())


def test_other_topics_keep_fausts_own_rule() -> None:
    c, seeks = _consumer(None, [])
    other = TP("streams-__assignor-__leader", 0)
    c._acked[other] = [7, 8]
    c._acked_index[other] = {7, 8}
    assert c._new_offset(other) == 9 and not seeks


def test_a_partition_nobody_committed_starts_at_its_log_start_so_the_guard_has_a_start() -> None:
    from faust.transport.consumer import Consumer as FaustConsumer

    # Faust's own rule on such a partition: the first finished run is committed, whatever came before.
    c, _ = _consumer(None, list(range(577, 600)))
    assert FaustConsumer._new_offset(c, RAW) == 600

    async def run() -> None:
        c, seeks = _consumer(None, [])
        c._read_offset = defaultdict(lambda: None)

        async def seek_to_committed():
            return {RAW: None}

        async def earliest_offsets(*tps):
            return {tp: 191 for tp in tps}

        c.seek_to_committed = seek_to_committed
        c.earliest_offsets = earliest_offsets
        c.assignment = lambda: {RAW}
        await c.perform_seek()
        assert seeks == [{RAW: 191}] and c._committed_offset[RAW] == 191
        c._acked[RAW] = list(range(577, 600))  # 191..576 dropped
        c._acked_index[RAW] = set(c._acked[RAW])
        assert c._new_offset(RAW) is None

    asyncio.run(run())
