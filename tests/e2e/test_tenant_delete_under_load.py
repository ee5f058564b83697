"""Deleting tenants while events of every tenant stream in (issue 9, point 2).

Before: deleting a tenant named by STREAMS_TENANTS only edited the registry; one event of it
made the worker retry its deleted topic for ever (the other tenant starved) and re-created
its tenant key, subject keys and store documents after the delete's receipt. Now deletion
wins over configuration, the store and the key store refuse anything of a deleted tenant
atomically, and its events go to the DLQ as ``unknown_tenant``.
"""

from __future__ import annotations

import time

import pytest
import redis

from streams.dlq.record import decode_dlq
from streams.connections import admin_client
from streams.privacy.keys import pipeline_prefix
from streams.tenancy.onboarding import build_service
from tests.conftest import unique
from tests.kafka_read import read_topic
from tests.load import steady_load

pytestmark = pytest.mark.e2e


def test_deleting_a_configured_and_an_onboarded_tenant_under_load(make_settings, start_worker):
    s = make_settings()
    configured, survivor = sorted(s.tenants)
    svc = build_service(s, "test:delete")
    onboarded = unique("t")
    svc.create(onboarded)
    start_worker(s)
    with steady_load(s, [configured, survivor, onboarded], subjects=9) as sent:
        time.sleep(2)
        receipts = [svc.delete(configured), svc.delete(onboarded)]
        time.sleep(3)  # events of the deleted tenants keep coming
    assert all(r["status"] == "done" for r in receipts)

    # The survivor was not held back: every event it published is delivered.
    got = read_topic(s.kafka_bootstrap, s.tenant_topic(survivor), expect=len(sent[survivor]), timeout=90)
    delivered = {m.key().decode().split("/", 1)[1] for m in got}
    assert delivered >= set(sent[survivor]), f"{len(set(sent[survivor]) - delivered)} of the survivor's events missing"

    # Nothing of the deleted tenants came back: no store document, index, key or stat, no topic.
    time.sleep(2)  # the worker's last batches are done (the survivor's events all arrived above)
    r = redis.Redis.from_url(s.redis_url)
    for t in (configured, onboarded):
        left = [k for k in r.scan_iter(match=f"*{{{t}}}*") if not k.decode().startswith("tenancy:")]
        assert left == [], (t, left[:5])
        assert not r.exists(f"{pipeline_prefix(t)}tenant")
    # Control for that search: the survivor's keyspace is found by the same pattern.
    assert any(True for _ in r.scan_iter(match=f"*{{{survivor}}}*"))
    topics = admin_client(s).list_topics(timeout=10).topics
    for t in (configured, onboarded):
        assert s.tenant_topic(t) not in topics and s.tenant_raw_topic(t) not in topics
    assert s.tenant_topic(survivor) in topics

    # Their later events went to the DLQ as unknown_tenant.
    dlq = [decode_dlq(m.value()) for m in read_topic(s.kafka_bootstrap, s.dlq_topic, timeout=30, idle=5)]
    assert dlq and {d["reason"] for d in dlq} == {"unknown_tenant"}
    print(f"survivor delivered {len(delivered)}; {len(dlq)} events of deleted tenants dead-lettered")
