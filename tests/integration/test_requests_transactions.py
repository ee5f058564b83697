"""Transactions on privacy.requests never stall the pipeline (issue: one Kafka transaction
stopped every tenant).

A hostile or broken producer leaves a transaction open, aborts one, or commits one. The
requests reader reads read_committed up to the last stable offset: the committed request is
applied, the aborted one never is, the open one waits for its transaction, and nothing is
left "behind" that would make a batch wait (the commit and abort markers, which are never
delivered, count as read).
"""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Producer

from streams.consent.requests import new_request
from streams.consent.state import DropReason
from streams.ingest.processor import EventProcessor
from streams.ops.metrics import Metrics
from streams.runtime import build_runtime
from streams.schema.registry import SchemaRegistry

pytestmark = pytest.mark.integration


def _tx_producer(s) -> Producer:
    p = Producer({"bootstrap.servers": s.kafka_bootstrap, "partitioner": "murmur2_random",
                  "transactional.id": f"hostile-{uuid.uuid4().hex[:8]}", "log_level": 0})
    p.init_transactions(20)
    return p


def _settle(reader, seconds: float = 15.0) -> None:
    """Apply until nothing is behind: the last stable offset moves past a commit or abort marker a
    moment after the transaction ends, so one catch-up may stop short of it (the next one goes on)."""
    import time

    deadline = time.monotonic() + seconds
    while reader.behind():
        assert time.monotonic() < deadline, f"still behind: {reader.behind()}"
        reader.catch_up([0])
        time.sleep(0.1)


def _decision(rt, tenant: str, subject: str):
    gate = rt.pipeline.gate
    return gate.decide(gate.states([(tenant, subject)]).states[(tenant, subject)], tenant, "order_placed")


def test_committed_aborted_and_open_transactions_on_privacy_requests(make_settings):
    s = make_settings(partitions=1)  # one partition: every request below shares it, in this order
    tenant = sorted(s.tenants)[0]
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    rt = build_runtime(s, registry, EventProcessor(registry, s.tenants, s.max_event_bytes), Metrics(), "test",
                       lambda: {0})
    reader = rt.request_reader
    committed, aborted, pending, plain = (new_request("opt_out", tenant, f"tx-{n}", "test") for n in range(4))

    p = _tx_producer(s)
    p.begin_transaction()
    p.produce(s.requests_topic, committed.to_json(), committed.key)
    p.commit_transaction(20)
    p.begin_transaction()
    p.produce(s.requests_topic, aborted.to_json(), aborted.key)
    p.flush(20)
    p.abort_transaction(20)
    reader.catch_up([0])
    _settle(reader)
    # Control: the committed one is applied; the aborted one never is. Nothing is behind although
    # the partition ends with an abort marker no consumer ever receives.
    assert _decision(rt, tenant, "tx-0") is DropReason.OPTED_OUT
    assert _decision(rt, tenant, "tx-1") is None
    assert reader.behind() == {}

    left_open = _tx_producer(s)
    left_open.begin_transaction()
    left_open.produce(s.requests_topic, pending.to_json(), pending.key)
    left_open.flush(20)
    plain_p = Producer({"bootstrap.servers": s.kafka_bootstrap, "partitioner": "murmur2_random"})
    plain_p.produce(s.requests_topic, plain.to_json(), plain.key)
    assert plain_p.flush(20) == 0
    # An open transaction: nothing readable is behind, so a batch does not wait (before the fix the
    # reader waited for the high watermark for ever and held every batch back).
    assert reader.behind() == {}
    reader.wait_applied([0], timeout=1)
    assert reader.catch_up([0]) == 0
    assert _decision(rt, tenant, "tx-2") is None and _decision(rt, tenant, "tx-3") is None

    left_open.abort_transaction(20)
    deadline_tries = 0
    while reader.behind() == {} and deadline_tries < 50:  # the stable offset moves past the abort
        import time

        time.sleep(0.1)
        deadline_tries += 1
    _settle(reader)
    assert _decision(rt, tenant, "tx-2") is None  # aborted: never applied
    assert _decision(rt, tenant, "tx-3") is DropReason.OPTED_OUT  # the plain request behind it now is
