"""The ingest agent's check that records come in offset order with none skipped
(streams.ingest.offset_gaps), with the broker's answer for a gap given by the test."""

from __future__ import annotations

from streams.ingest.batch import RawRecord
from streams.ingest.offset_gaps import Hole, PartitionCursor

T = "events.raw"


def _recs(partition: int, *offsets: int) -> list[RawRecord]:
    return [RawRecord(b"k", b"v", T, partition, o, None) for o in offsets]


def _cursor(starts: dict[int, int | None], records_in: set[tuple[int, int]] = frozenset()):
    asked: list[tuple[int, int, int]] = []

    def holds(topic: str, partition: int, lo: int, hi: int) -> bool:
        asked.append((partition, lo, hi))
        return any(p == partition and lo <= o < hi for p, o in records_in)

    return PartitionCursor(lambda tp: starts.get(tp[1]), holds), asked


def test_records_in_order_from_the_committed_offset_pass_and_a_marker_is_no_gap() -> None:
    c, asked = _cursor({0: 10, 1: None})
    batch = _recs(0, 10, 11, 13) + _recs(1, 500, 501)  # 12: a commit marker; partition 1: no start known
    assert c.split_and_gaps(batch) == (batch, [], [])
    more = _recs(0, 14) + _recs(1, 502)
    assert c.split_and_gaps(more) == (more, [], [])
    assert asked == []


def test_records_the_consumer_dropped_hold_the_partition_back_until_they_come_again() -> None:
    c, asked = _cursor({0: 100, 1: 0}, records_in={(0, o) for o in range(100, 150)})
    batch = _recs(0, 150, 151) + _recs(1, 0, 1)
    ready, holes, empty = c.split_and_gaps(batch)
    assert ready == _recs(1, 0, 1) and holes == [Hole(T, 0, 100, 150)] and empty == []
    # The prefetched rest is held back too, until the partition is read again from 100.
    assert c.split_and_gaps(_recs(0, 152)) == ([], [Hole(T, 0, 100, 152)], [])
    again = _recs(0, *range(100, 153))
    ready, holes, _ = c.split_and_gaps(again)
    assert ready == again and holes == []
    assert c.split_and_gaps(_recs(0, 120, 153)) == (_recs(0, 153), [], [])  # a duplicate below: done


def test_an_empty_gap_is_passed_and_reported() -> None:
    c, asked = _cursor({0: 0})  # offsets 0..1: an aborted transaction
    batch = _recs(0, 2, 3)
    assert c.split_and_gaps(batch) == (batch, [], [Hole(T, 0, 0, 2)])
    assert asked == [(0, 0, 2)]


def test_a_new_assignment_starts_over_from_the_committed_offsets() -> None:
    starts = {0: 5}
    c, _ = _cursor(starts)
    c.new_assignment(1)
    assert c.split_and_gaps(_recs(0, 5, 6))[0] == _recs(0, 5, 6)
    c.new_assignment(1)  # same generation: carries on
    assert c.split_and_gaps(_recs(0, 5))[0] == []
    starts[0] = 3
    c.new_assignment(2)  # moved and back: Faust seeks to the committed offset, read again from there
    assert c.split_and_gaps(_recs(0, 3, 4))[0] == _recs(0, 3, 4)
