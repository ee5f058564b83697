"""A worker run with STREAMS_LOG_FORMAT=json logs one JSON object a line, and still no producer value."""

from __future__ import annotations

import json

import pytest

from streams.ingest import samples
from streams.ingest.producer import EventProducer
from streams.schema.registry import SchemaRegistry
from tests.kafka_read import read_topic

pytestmark = pytest.mark.e2e

CANARY = "Json Log Canary 8817"


def test_json_log_lines_parse_and_hold_no_canary(make_settings, start_worker):
    s = make_settings()
    tenant = sorted(s.tenants)[0]
    worker = start_worker(s, extra_env={"STREAMS_LOG_FORMAT": "json"})
    producer = EventProducer(s.kafka(), s.raw_topic, SchemaRegistry.load_dir(s.schemas_dir))
    bad = dict(samples.signup(tenant, "j-1", full_name=CANARY), birth_date=CANARY)  # a schema violation
    producer.send_raw(f"{tenant}/j-1".encode(), json.dumps(bad).encode())
    producer.send(samples.signup(tenant, "j-2", full_name=CANARY))
    assert len(read_topic(s.kafka_bootstrap, s.dlq_topic, expect=1, timeout=60)) == 1
    assert len(read_topic(s.kafka_bootstrap, s.tenant_topic(tenant), expect=1, timeout=60)) == 1
    worker.stop()
    lines = [line for line in worker.log_text().splitlines() if line.strip()]
    docs = [json.loads(line) for line in lines if line.startswith("{")]
    assert len(docs) >= 3 and all({"ts", "level", "logger", "message"} <= set(d) for d in docs)
    # Everything the logging system wrote is JSON; anything else is a stray print (none expected).
    assert [line for line in lines if not line.startswith("{")] == []
    assert CANARY not in worker.log_text() and "j-1" not in worker.log_text()
