"""Consumer progress, the privacy-request backlog, readiness reasons, and what a batch counts."""

from __future__ import annotations

import asyncio
import dataclasses
import time

from streams.ingest.batch import BatchPipeline
from streams.ops import metric_catalogue as M
from streams.ops.health import (Offsets, PartitionProgress, PrivacyBacklog, lag_records, policy_fingerprint,
                                readiness, set_build_info)
from streams.ops.metrics import Metrics
from streams.settings import Settings
from tests.unit.test_batch_erasure_race import Audit, Gate, Kafka, Keys, Store, _records
from tests.unit.test_fairness import Clock


def test_lag_is_end_minus_next_offset_to_process() -> None:
    assert lag_records(Offsets(end=100, processed=40, committed=30)) == 60
    assert lag_records(Offsets(end=100, committed=30)) == 70
    assert lag_records(Offsets(end=100, position=90)) == 10  # nothing processed or committed yet
    assert lag_records(Offsets(end=None, processed=40)) is None
    assert lag_records(Offsets(end=10)) is None
    assert lag_records(Offsets(end=10, processed=12)) == 0


def test_a_trailing_transaction_marker_is_no_lag() -> None:
    # The last record at 9 processed, the commit marker at 10: the end is 11, the consumer fetched it all.
    assert lag_records(Offsets(end=11, processed=10, position=11, last_read=9)) == 0
    # ...but a record the consumer handed out and the worker has not finished is.
    assert lag_records(Offsets(end=11, processed=9, position=11, last_read=10)) == 2
    # ...and so is what it has not fetched yet.
    assert lag_records(Offsets(end=11, processed=10, position=10, last_read=9)) == 1


def test_progress_gauges_lag_stalled_time_and_revocation() -> None:
    m, clock = Metrics(process=False), Clock()
    p = PartitionProgress(m, clock)
    p.update({("events.raw", 0): Offsets(end=100, processed=40), ("events.raw", 1): Offsets(end=5, processed=5)})
    assert m.value(M.CONSUMER_LAG, topic="events.raw", partition=0) == 60
    assert m.value(M.PARTITIONS_ASSIGNED, topic="events.raw") == 2
    clock.now += 30  # partition 0 made no progress with records waiting; partition 1 has none waiting
    p.update({("events.raw", 0): Offsets(end=120, processed=40), ("events.raw", 1): Offsets(end=5, processed=5)})
    assert m.value(M.CONSUMER_STALLED, topic="events.raw", partition=0) == 30
    assert m.value(M.CONSUMER_STALLED, topic="events.raw", partition=1) == 0
    clock.now += 5  # progress
    p.update({("events.raw", 0): Offsets(end=120, processed=50)})
    assert m.value(M.CONSUMER_STALLED, topic="events.raw", partition=0) == 0
    assert m.value(M.CONSUMER_LAG, topic="events.raw", partition=0) == 70
    # partition 1 was revoked: its series are gone
    assert {s["partition"] for s in m.series(M.CONSUMER_LAG)} == {"0"}
    assert {s["partition"] for s in m.series(M.CONSUMER_STALLED)} == {"0"}
    assert m.value(M.PARTITIONS_ASSIGNED, topic="events.raw") == 1
    p.update({})
    assert m.value(M.PARTITIONS_ASSIGNED, topic="events.raw") == 0


def test_a_stalled_partition_is_logged_with_what_the_worker_knows_of_it_then_each_minute(caplog) -> None:
    m, clock = Metrics(process=False), Clock()
    p = PartitionProgress(m, clock)
    stuck = Offsets(end=100, processed=40, committed=40, position=55, last_read=54)
    p.update({("events.raw", 3): stuck})
    with caplog.at_level("WARNING", logger="streams.ops.health"):
        clock.now += 29
        p.update({("events.raw", 3): stuck})
        assert not caplog.records  # not yet
        clock.now += 1
        p.update({("events.raw", 3): stuck})
        assert [r.getMessage() for r in caplog.records] == [
            "partition events.raw[3] stalled for 30 s with 60 records waiting: end 100, fetch position 55, "
            "last read 54, processed up to 40, committed 40"]
        clock.now += 30
        p.update({("events.raw", 3): stuck})
        assert len(caplog.records) == 1  # once a minute
        clock.now += 30
        p.update({("events.raw", 3): stuck})
        assert len(caplog.records) == 2
        clock.now += 1
        p.update({("events.raw", 3): Offsets(end=100, processed=60)})  # moving again: nothing more
        clock.now += 40
        p.update({("events.raw", 3): Offsets(end=100, processed=80)})
        assert len(caplog.records) == 2


def test_privacy_backlog_counts_and_ages_a_partition_that_does_not_move() -> None:
    m, clock = Metrics(process=False), Clock()
    b = PrivacyBacklog(m, clock)
    b.update({0: (3, 5)})
    assert m.value(M.PRIVACY_REQUESTS_PENDING) == 2 and m.value(M.PRIVACY_REQUEST_OLDEST_AGE) == 0
    clock.now += 90
    b.update({0: (3, 6), 2: (0, 1)})
    assert m.value(M.PRIVACY_REQUESTS_PENDING) == 4 and m.value(M.PRIVACY_REQUEST_OLDEST_AGE) == 90
    assert b.stale([0, 1, 2]) == [0] and b.stale([1, 2]) == []
    clock.now += 1
    b.update({0: (4, 6)})  # moved on: the next request is counted from now
    assert m.value(M.PRIVACY_REQUEST_OLDEST_AGE) == 0 and b.stale([0]) == []
    b.update({})
    assert m.value(M.PRIVACY_REQUESTS_PENDING) == 0


def test_readiness_reasons() -> None:
    assert readiness(True, True, 3, [], "events.raw") == []
    assert readiness(False, False, 0, [], "events.raw") == ["starting: the worker's clients are not built yet"]
    reasons = readiness(True, False, 0, [2], "events.raw")
    assert reasons[0] == "redis does not answer" and "events.raw" in reasons[1] and "[2]" in reasons[2]


def test_build_info_names_the_policy() -> None:
    a = [{"name": "x", "fields": [{"name": "email", "pii": "email", "transform": "tokenize"}]}]
    b = [{"name": "x", "fields": [{"name": "email", "pii": "email", "transform": "hash"}]}]
    assert policy_fingerprint(a) != policy_fingerprint(b) and len(policy_fingerprint(a)) == 12
    assert policy_fingerprint(a + b) == policy_fingerprint(b + a)
    m = Metrics(process=False)
    set_build_info(m, a)
    (labels,) = m.series(M.BUILD_INFO)
    assert labels["schemas"] == "1" and labels["policy"] == policy_fingerprint(a) and labels["version"]


def test_a_batch_counts_by_tenant_times_its_stages_and_each_delivered_event() -> None:
    records, proc = _records(2, ["gone", "kept"])
    sent_ms = int(time.time() * 1000) - 1500  # produced 1.5 s ago
    records = [dataclasses.replace(r, timestamp_ms=sent_ms) for r in records]
    records.append(dataclasses.replace(records[0], value=b"not an event", offset=99))
    m = Metrics(process=False)
    p = BatchPipeline(Settings(), proc, Kafka(), Store({"gone"}), Keys(), m, gate=Gate(),  # type: ignore[arg-type]
                      audit=Audit())
    result = asyncio.run(p.handle(records))
    assert result.accepted == 2
    assert m.value(M.EVENTS_PROCESSED, tenant="acme") == 4 and m.value(M.EVENTS_PROCESSED, tenant=M.NO_TENANT) == 1
    assert m.value(M.EVENTS_DELIVERED, tenant="acme") == 2
    assert m.value(M.EVENTS_CONSENT_DROPPED, tenant="acme", reason="erased") == 2
    assert m.total(M.EVENTS_DLQ) == 1 and m.series(M.EVENTS_DLQ)[0]["tenant"] == M.NO_TENANT
    assert m.value(M.BATCH_SIZE) == 1 and m.value(M.BATCH_DURATION) == 1
    stages = {s["stage"] for s in m.series(M.BATCH_STAGE_DURATION)}
    assert {"validate", "consent", "keys", "transform", "topic_check", "store", "kafka", "stats"} <= stages
    assert stages <= set(M.BATCH_STAGES) | {"store", "kafka"}
    assert m.value(M.EVENT_E2E_LATENCY) == 2
    assert 1.5 <= m.registry.get_sample_value("streams_event_e2e_latency_seconds_sum") / 2 < 60
