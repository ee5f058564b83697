"""What an operator watches: the /metrics page after events flowed (end-to-end latency, a lag gauge
for every assigned partition, the batch stages, the build), and /ready following Redis down and up
while /live does not."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from streams.devstack.stack import LocalStack
from streams.ingest import samples
from streams.ingest.producer import EventProducer, encode_event, event_key
from streams.schema.registry import SchemaRegistry
from tests import metrics_page
from tests.e2e.test_api_http import free_port
from tests.e2e.test_raw_transactions import _tx
from tests.metrics_page import operator_token, scrape_until

pytestmark = pytest.mark.e2e


def _get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def _wait_status(port: int, path: str, status: int, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        got, body = _get(port, path)
        if got == status:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} still answers {got} {body} after {timeout:.0f} s (expected {status})")
        time.sleep(0.3)


def test_metrics_show_latency_lag_per_partition_and_stages_after_events_flow(make_settings, start_worker):
    s = make_settings(web_enabled=True, web_port=free_port())
    tenant = sorted(s.tenants)[0]
    start_worker(s)
    producer = EventProducer(s.kafka_bootstrap, s.raw_topic, SchemaRegistry.load_dir(s.schemas_dir))
    n = 40
    for i in range(n):  # 40 subjects: every partition gets some
        producer.send(samples.signup(tenant, f"op-{i}"))
    producer.flush()
    token = operator_token(s)
    raw = {str(p) for p in range(s.partitions)}

    def settled(page: list) -> bool:
        lag = _raw_lag(page, s.raw_topic)
        return (metrics_page.value(page, "streams_events_delivered_total", tenant=tenant) == n
                and set(lag) == raw and not any(lag.values()))

    page = scrape_until(s.web_port, token, settled, timeout=60)
    assert metrics_page.value(page, "streams_events_delivered_total", tenant=tenant) == n
    assert metrics_page.value(page, "streams_event_e2e_latency_seconds_count") == n
    assert metrics_page.value(page, "streams_event_e2e_latency_seconds_sum") > 0
    # One worker: every partition of the raw topic is its, each with a lag gauge (0: all processed)
    # and a stalled time (0: nothing waiting).
    lag = _raw_lag(page, s.raw_topic)
    assert lag == dict.fromkeys(raw, 0.0), lag
    stalled = _raw_lag(page, s.raw_topic, "streams_consumer_stalled_seconds")
    assert stalled == dict.fromkeys(raw, 0.0), stalled
    assert metrics_page.value(page, "streams_partitions_assigned", topic=s.raw_topic) == s.partitions
    batches = metrics_page.value(page, "streams_batch_duration_seconds_count")
    assert batches and metrics_page.value(page, "streams_batch_size_records_sum") == n
    for stage in ("validate", "consent", "keys", "transform", "store", "kafka"):
        assert metrics_page.value(page, "streams_batch_stage_duration_seconds_count", stage=stage) == batches, stage
    (build,) = [x for x in page if x.name == "streams_build_info"]
    assert build.value == 1 and build.labels["version"] and int(build.labels["schemas"]) >= 3
    assert metrics_page.value(page, "streams_privacy_requests_pending_records") == 0
    assert metrics_page.value(page, "process_resident_memory_bytes")
    assert _get(s.web_port, "/ready") == (200, {"ready": True})


def _raw_lag(page: list, topic: str, name: str = "streams_consumer_lag_records") -> dict[str, float]:
    return {x.labels["partition"]: x.value for x in page if x.name == name and x.labels["topic"] == topic}


def test_a_transaction_commit_marker_is_no_lag(make_settings, start_worker):
    # The marker after a transaction's last record takes an offset the consumer never hands out:
    # the partition's end stays one above the next offset to process, which is not lag.
    s = make_settings(web_enabled=True, web_port=free_port())
    tenant = sorted(s.tenants)[0]
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    start_worker(s)
    tx = _tx(s)
    for i in range(3):
        e = samples.signup(tenant, "tx-lag")  # one subject: one partition
        tx.produce(s.raw_topic, encode_event(registry, e, "avro"), event_key(e))
    tx.commit_transaction(20)
    token = operator_token(s)
    page = scrape_until(s.web_port, token, lambda p: metrics_page.value(
        p, "streams_events_delivered_total", tenant=tenant) == 3 and _raw_lag(p, s.raw_topic)
        and not any(_raw_lag(p, s.raw_topic).values()), timeout=60)
    assert metrics_page.value(page, "streams_events_delivered_total", tenant=tenant) == 3
    assert _raw_lag(page, s.raw_topic) == {str(p): 0.0 for p in range(s.partitions)}
    time.sleep(5)  # and it does not count as stalled either
    page = metrics_page.samples(metrics_page.scrape_text(s.web_port, token))
    assert set(_raw_lag(page, s.raw_topic, "streams_consumer_stalled_seconds").values()) == {0.0}


@pytest.mark.faults
@pytest.mark.timeout(300)
def test_ready_follows_redis_and_live_does_not(stack, make_settings, start_worker):
    if stack.local is None:
        pytest.skip(f"needs the local stack's Redis process to stop (stack kind: {stack.kind})")
    local = LocalStack(stack.local)
    s = make_settings(web_enabled=True, web_port=free_port())
    start_worker(s)
    _wait_status(s.web_port, "/ready", 200, timeout=60)
    try:
        local.redis.stop()
        body = _wait_status(s.web_port, "/ready", 503, timeout=30)
        assert body["ready"] is False and "redis does not answer" in body["reasons"], body
        assert _get(s.web_port, "/live") == (200, {"live": True})  # liveness asks no dependency
    finally:
        local.redis.start()
    assert _wait_status(s.web_port, "/ready", 200, timeout=60) == {"ready": True}
