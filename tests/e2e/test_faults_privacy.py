"""Privacy requests interrupted by a crash complete after a restart (issue: faults, point 6).

A failpoint (streams/ops/failpoints.py) kills the worker with SIGKILL exactly between two
steps of an erasure. After a restart without it the receipt turns done, with every step,
and nothing deleted comes back: not in the store, not the key, and every event of the
subject in the tenant topic has a tombstone after it.
"""

from __future__ import annotations

import time

import pytest
import redis
from confluent_kafka import Producer

from streams.erasure.executor import PENDING_AOF
from streams.consent.requests import new_request
from streams.consent.store import ConsentStore
from streams.ingest import samples
from streams.ingest.producer import EventProducer
from streams.privacy.keys import subject_key_name
from streams.schema.registry import SchemaRegistry
from streams.sinks.store import StoreReader
from tests.e2e.test_privacy_requests import _records_of, _tombstoned_after_delivery
from tests.kafka_groups import wait_committed

# Each case: a worker start, the crash, a restart and the erasure's completion (at most 60 + 90 s).
pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.timeout(300)]


@pytest.mark.parametrize("point", ["erasure.tombstone", "erasure.store", "erasure.aof"])
def test_erasure_interrupted_by_a_crash_completes_after_restart(point, make_settings, start_worker):
    s = make_settings(session_timeout=6.0)
    tenant = sorted(s.tenants)[0]
    subject = "crash-me"
    producer = EventProducer(s.kafka(), s.raw_topic, SchemaRegistry.load_dir(s.schemas_dir))
    mine = [samples.signup(tenant, subject), samples.order(tenant, subject), samples.support(tenant, subject)]
    keeper = samples.order(tenant, "keeper")
    for e in mine + [keeper]:
        producer.send(e)
    producer.flush()
    # The test Redis outlives sessions: an erasure an earlier, interrupted run left pending would
    # make this worker's start-up drain hit the failpoint. Those belong to old test tenants.
    redis.Redis.from_url(s.redis_url).delete(PENDING_AOF)
    worker = start_worker(s, extra_env={"STREAMS_FAILPOINTS": point}, killed_on_purpose=True)
    reader = StoreReader.from_settings(s)
    deadline = time.monotonic() + 60
    while len(reader.by_subject(tenant, subject)) < len(mine):
        assert time.monotonic() < deadline, worker.log_text()[-2000:]
        time.sleep(0.2)

    req = new_request("erase", tenant, subject, "test")
    p = Producer({**s.kafka(), "partitioner": "murmur2_random"})
    p.produce(s.requests_topic, req.to_json(), req.key)
    assert p.flush(30) == 0
    worker.proc.wait(60)  # the failpoint fires between two steps
    assert worker.proc.returncode == -9, f"the worker did not stop at {point}: {worker.proc.returncode}"
    consent = ConsentStore(redis.Redis.from_url(s.redis_url))
    before = consent.receipt(tenant, req.request_id)
    assert before is None or before["status"] != "done", "a receipt was issued before every step was done"

    start_worker(s)  # no failpoint
    deadline = time.monotonic() + 90
    while (consent.receipt(tenant, req.request_id) or {}).get("status") != "done":
        assert time.monotonic() < deadline, f"erasure not completed after the restart (crash at {point})"
        time.sleep(0.3)
    receipt = consent.receipt(tenant, req.request_id)
    assert [st["step"] for st in receipt["steps"]] == ["state", "tombstone", "store", "key", "quarantine", "dlq", "aof", "audit"]

    # Nothing deleted came back: the raw events (replayed if the crash left them uncommitted) were
    # dropped, not delivered again. Synced on the restarted worker committing all of events.raw.
    wait_committed(s.kafka(), s.app_id, s.raw_topic, timeout=60)
    assert reader.by_subject(tenant, subject) == []
    assert redis.Redis.from_url(s.redis_url).get(subject_key_name(tenant, subject)) is None
    records = _records_of(s, tenant, subject)
    assert records and _tombstoned_after_delivery(records), records
    assert reader.get(tenant, str(keeper["event_id"])) is not None
