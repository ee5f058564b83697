"""A subject id of exactly 128 characters (the longest allowed) carrying non-ASCII personal data
('Zoë Ωmega 李雷 🙂', combining marks), end to end on a running worker: publish → store → tenant
topic → HTTP API (query, detokenize back to the exact code points) → erasure (receipt counts,
store, API and detokenize after)."""

from __future__ import annotations

import json
import random
import unicodedata

import pytest
import redis

from streams.api.api_keys import ApiKeyStore, Role
from streams.ingest import samples
from streams.ingest.producer import EventProducer
from streams.schema import codec
from streams.schema.registry import SchemaRegistry
from streams.sinks.store import StoreReader
from streams.records import split_key
from tests.e2e.test_api_http import call, free_port, wait_until
from tests.e2e.test_privacy_requests import _file
from tests.kafka_read import read_topic

pytestmark = pytest.mark.e2e

NAME = "Zoë Ωmega 李雷 🙂"
NAME_NFD = unicodedata.normalize("NFD", "Zoë Ångström") + "\u0301"  # decomposed, plus a lone combining mark
CITY = "Zürich-Ørsted 東京"
BODY = "Grüße, спасибо, 谢谢 🙂: bitte rufen Sie an"


def test_128_character_subject_with_unicode_values_end_to_end(make_settings, start_worker):
    s = make_settings(web_enabled=True, web_port=free_port())
    tenant = sorted(s.tenants)[0]
    subject = ("subj:" + "a1._-" * 30)[:127] + "Z"
    assert len(subject) == 128
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    rng = random.Random(128)
    events = [samples.signup(tenant, subject, rng, full_name=NAME), samples.signup(tenant, subject, rng, full_name=NAME_NFD),
              samples.order(tenant, subject, rng), samples.support(tenant, subject, rng, body=BODY)]
    events[2]["shipping_address"].update(recipient_name=NAME, city=CITY, postal_code="Ü1 4ÄP")
    producer = EventProducer(s.kafka_bootstrap, s.raw_topic, registry)
    for i, e in enumerate(events):
        producer.send(e, "json" if i % 2 else "avro")
    producer.flush()
    keys = ApiKeyStore(redis.Redis.from_url(s.redis_url))
    _, reader_key = keys.create(tenant, Role.READER, "edges")
    _, detok_key = keys.create(tenant, Role.DETOKENIZER, "edges")
    start_worker(s)
    base = f"http://127.0.0.1:{s.web_port}"

    # Store: all four under the 128-character subject.
    store = StoreReader.from_settings(s)
    wait_until(lambda: len(store.by_subject(tenant, subject)) == len(events), what="the events in the store")
    # Tenant topic: keys <subject>/<event id>, values decode with the clean schemas.
    clean = SchemaRegistry.load_dir(s.schemas_dir / "clean")
    msgs = read_topic(s.kafka_bootstrap, s.tenant_topic(tenant), expect=len(events), timeout=60)
    assert sorted(split_key(m.key())[1] for m in msgs) == sorted(e["event_id"] for e in events)
    assert {split_key(m.key())[0] for m in msgs} == {subject}
    decoded = [codec.decode(clean, m.value())[1] for m in msgs]
    text = json.dumps(decoded, default=str, ensure_ascii=False)
    for raw in (NAME, NAME_NFD, CITY, BODY, "李雷", "Ωmega", "Zoë", "Ångström"):
        assert raw not in text, raw
    assert "Ü1***" in text  # the postal code's mask keeps its first two characters, non-ASCII too

    # API: the subject's events; detokenize gives back the exact code points (no normalization).
    status, _, body = call(base, f"/v1/tenants/{tenant}/subjects/{subject}/events?limit=10", reader_key)
    assert status == 200 and sorted(d["event_id"] for d in body["events"]) == sorted(e["event_id"] for e in events)
    by_id = {d["event_id"]: d["event"] for d in body["events"]}
    tokens = [by_id[events[0]["event_id"]]["full_name"], by_id[events[1]["event_id"]]["full_name"],
              by_id[events[2]["event_id"]]["shipping_address"]["city"]]
    for token, want in zip(tokens, (NAME, NAME_NFD, CITY)):
        assert token.startswith("tok.")
        status, _, got = call(base, f"/v1/tenants/{tenant}/detokenize", detok_key, "POST",
                              {"subject": subject, "token": token, "reason": "unicode check"})
        assert status == 200 and got["value"] == want, (status, got)
    assert tokens[0] != tokens[1]

    # Erasure of the 128-character subject reaches the topic, the store, the key and the API.
    _, receipt = _file(s, tenant, "erase", subject, "--reason", "edge case")
    steps = {st["step"]: st for st in receipt["steps"]}
    assert receipt["status"] == "done"
    assert steps["tombstone"]["events"] == len(events) and steps["store"]["deleted_events"] == len(events)
    assert steps["key"]["destroyed"] is True
    assert subject not in json.dumps(receipt)
    assert store.by_subject(tenant, subject) == []
    status, _, body = call(base, f"/v1/tenants/{tenant}/subjects/{subject}/events", reader_key)
    assert status == 200 and body["events"] == []
    status, _, got = call(base, f"/v1/tenants/{tenant}/detokenize", detok_key, "POST",
                          {"subject": subject, "token": tokens[0], "reason": "after erasure"})
    assert status != 200 and NAME not in json.dumps(got, ensure_ascii=False)
    tomb = [m for m in read_topic(s.kafka_bootstrap, s.tenant_topic(tenant), expect=2 * len(events), timeout=60)
            if m.value() is None]
    assert sorted(split_key(m.key())[1] for m in tomb) == sorted(e["event_id"] for e in events)
