"""DataApi on the real Redis store, key store and audit topic: queries, paging, isolation, audited detokenize."""

from __future__ import annotations

import asyncio
import json
import random
import time

import pytest
import redis

from streams.api.api_keys import ApiKeyStore, Role
from streams.api.service import DataApi, build_data_api
from streams.audit.exceptions import AuditError
from streams.audit.keys import open_audit_log
from streams.audit.log import AuditLog, read_all
from streams.connections import async_redis_client
from streams.ingest import samples
from streams.ingest.processor import EventProcessor
from streams.records import Accepted, SourceRef
from streams.ingest.producer import encode_event, event_key
from streams.privacy.keys import KeyStore, LocalKeyFileProvider
from streams.schema.registry import SchemaRegistry
from streams.sinks.store import StoreWriter

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000


def open_audit(s) -> AuditLog:
    """The test's audit log; its topic was created a moment ago and may still be electing its leader."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return open_audit_log(s, "test:api")
        except AuditError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _store_events(s, events) -> list[Accepted]:
    """Process events as the worker does (tokens made with the real subject keys) and write them to the store."""
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    proc = EventProcessor(registry, s.tenants, s.max_event_bytes)
    keys = KeyStore(redis.Redis.from_url(s.redis_url), LocalKeyFileProvider(s.master_key_file))
    out = []
    for i, e in enumerate(events):
        o = proc.process(event_key(e), encode_event(registry, e, "avro"), SourceRef("raw", 0, i),
                         subject_key=lambda t, subj: keys.subject_keys(t, [subj])[subj])
        assert isinstance(o, Accepted), o
        out.append(o)

    async def write():
        w = StoreWriter(async_redis_client(s))
        await w.write_batch(out)
        await w.close()

    asyncio.run(write())
    return out


@pytest.fixture
def setup(make_settings):
    s = make_settings()
    a, b = sorted(s.tenants)
    LocalKeyFileProvider(s.master_key_file).load()  # the worker creates the master key; build_data_api only loads it
    rng = random.Random(7)
    events = [samples.order(a, "alice", rng, event_time=T0 + i * 1000) for i in range(7)]
    events += [samples.signup(a, "bob", rng, event_time=T0 + 500, email="bob.person@example.com")]
    events += [samples.order(b, "carol", rng, event_time=T0)]
    accepted = _store_events(s, events)
    audit = open_audit(s)
    api = build_data_api(s, audit, lambda: s.tenants)
    keys = ApiKeyStore(redis.Redis.from_url(s.redis_url))
    yield s, api, keys, events, accepted
    api.close()  # the background denial flush, before the audit it writes to
    audit.close()


def _h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_queries_and_paging_on_the_real_store(setup):
    s, api, keys, events, _ = setup
    a = sorted(s.tenants)[0]
    _, token = keys.create(a, Role.READER)

    seen, offset = [], 0
    while offset is not None:
        r = api.handle("GET", "subject_events", {"tenant": a, "subject": "alice"},
                       {"limit": "3", "offset": str(offset)}, _h(token), b"")
        assert r.status == 200, r
        seen += [d["event_id"] for d in r.body["events"]]
        offset = r.body["paging"]["next_offset"]
    assert seen == [e["event_id"] for e in events[:7]]  # every page, in event-time order, nothing twice

    r = api.handle("GET", "events", {"tenant": a}, {"type": "order_placed", "start": str(T0 + 1000),
                                                     "end": str(T0 + 3000)}, _h(token), b"")
    assert [d["event_id"] for d in r.body["events"]] == [e["event_id"] for e in events[1:4]]
    r = api.handle("GET", "events", {"tenant": a}, {"start": str(T0), "end": str(T0 + 999)}, _h(token), b"")
    assert {d["event_id"] for d in r.body["events"]} == {events[0]["event_id"], events[7]["event_id"]}

    r = api.handle("GET", "event", {"tenant": a, "event_id": events[7]["event_id"]}, {}, _h(token), b"")
    assert r.status == 200 and r.body["event"]["subject"] == "bob"
    assert "bob.person@example.com" not in json.dumps(r.body)  # the store holds clean events only
    r = api.handle("GET", "counts", {"tenant": a}, {"type": "customer_signup"}, _h(token), b"")
    assert r.body["count"] == 1
    assert api.handle("GET", "counts", {"tenant": a}, {}, _h(token), b"").body["count"] == 8


def test_tenant_isolation_on_the_real_store(setup):
    s, api, keys, events, _ = setup
    a, b = sorted(s.tenants)
    _, token_b = keys.create(b, Role.DETOKENIZER)
    carol_event = events[8]["event_id"]
    # B's key cannot reach A's data, even an event id that exists only in A, nor a tenant that does not exist.
    r1 = api.handle("GET", "event", {"tenant": a, "event_id": events[0]["event_id"]}, {}, _h(token_b), b"")
    r2 = api.handle("GET", "counts", {"tenant": "nosuchtenant"}, {}, _h(token_b), b"")
    assert r1.status == r2.status == 403 and r1.body == r2.body
    # A's event id asked in B's own keyspace is simply not there.
    r = api.handle("GET", "event", {"tenant": b, "event_id": events[0]["event_id"]}, {}, _h(token_b), b"")
    assert r.status == 404
    assert api.handle("GET", "event", {"tenant": b, "event_id": carol_event}, {}, _h(token_b), b"").status == 200


def test_detokenize_is_audited_and_denials_too(setup):
    s, api, keys, events, accepted = setup
    a = sorted(s.tenants)[0]
    detok_id, detok = keys.create(a, Role.DETOKENIZER)
    reader_id, reader = keys.create(a, Role.READER)
    token = accepted[7].clean_datum["email"]
    assert token.startswith("tok.email.")
    body = json.dumps({"subject": "bob", "token": token, "reason": "support ticket T-9"}).encode()

    r = api.handle("POST", "detokenize", {"tenant": a}, {}, _h(detok), body)
    assert r.status == 200 and r.body["value"] == "bob.person@example.com"
    assert api.handle("POST", "detokenize", {"tenant": a}, {}, _h(reader), body).status == 403
    wrong = json.dumps({"subject": "alice", "token": token, "reason": "wrong subject"}).encode()
    r = api.handle("POST", "detokenize", {"tenant": a}, {}, _h(detok), wrong)
    assert r.status == 422 and "bob.person" not in json.dumps(r.body)
    revoked_id, revoked = keys.create(a, Role.DETOKENIZER)
    keys.revoke(revoked_id)
    assert api.handle("POST", "detokenize", {"tenant": a}, {}, _h(revoked), body).status == 401
    api.flush_denials()  # the worker's background flush does this every STREAMS_API_DENIAL_AUDIT_WINDOW

    records = [rec for _, rec in read_all(s.kafka_bootstrap, s.audit_topic)]
    detoks = [r for r in records if r["action"] == "detokenize"]
    assert [(r["actor"], r["details"]["outcome"]) for r in detoks] == [(f"api:{detok_id}", "ok"),
                                                                      (f"api:{detok_id}", "refused")]
    denied = [r for r in records if r["action"] == "api.denied"]
    assert [(r["details"]["key_id"], r["details"]["status"]) for r in denied] == [(reader_id, 403), (revoked_id, 401)]
    assert denied[0]["subject"] == detoks[0]["subject"]  # the same pseudonym, never the id
    text = json.dumps(records)
    for secret in ("bob.person@example.com", token, '"bob"', detok.split("_", 2)[2], reader.split("_", 2)[2],
                   revoked.split("_", 2)[2]):
        assert secret not in text


def test_build_data_api_needs_the_master_key(make_settings):
    """Without the master key file building fails (KeyProviderError); once the worker made it, it builds."""
    from streams.privacy.exceptions import KeyProviderError
    from streams.privacy.keys import LocalKeyFileProvider

    s = make_settings()
    with open_audit(s) as audit:
        s.master_key_file.unlink()  # opening the (signed) audit log created it; the API must find none
        with pytest.raises(KeyProviderError):
            build_data_api(s, audit, lambda: s.tenants)
        assert not s.master_key_file.exists()  # the failed build did not create one either
        LocalKeyFileProvider(s.master_key_file).load()  # what the worker does at start
        api = build_data_api(s, audit, lambda: s.tenants, control=False)
        assert isinstance(api, DataApi)
        api.close()
