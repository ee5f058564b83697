"""A damaged key of one tenant does not stall the others (issue 9), on the real Kafka and Redis.

Before: ``KeyIntegrityError`` was transient, so a batch holding one event of a tenant whose key
record was damaged retried for ever and every tenant waited. Now KeyStore pins the damage on
the tenant (its check record unwraps, ``streams.privacy.keys.MasterKeyCheck``), the batch sends
that tenant's events to the DLQ as ``key_error`` and delivers the others; a wrong master key
still holds everything back. The damage is done with a plain Redis client, as bit rot or an
attacker with the pipeline's Redis rights would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import base64

import pytest
import redis
from confluent_kafka import Producer

from streams.consent.gate import REQUESTS_PARKED
from streams.consent.requests import new_request
from streams.dlq.record import decode_dlq
from streams.ingest import samples
from streams.ingest.batch import RawRecord
from streams.ingest.producer import encode_event, event_key
from streams.keyspace import PARKED_TENANTS_KEY, parked_requests_key, pseudonym_key
from streams.privacy.keys import KeyStore, LocalKeyFileProvider, tenant_hash_key
from streams.schema.registry import SchemaRegistry
from streams.sinks.store import StoreReader
from tests.runtime import fresh_runtime
from tests.kafka_read import read_topic

pytestmark = pytest.mark.integration

CANARY = "damaged.key.canary-7731@example.org"
# A batch that is held back never returns: bounded here, so the old behaviour fails the test.
BATCH_BOUND_S = 30


def _records(s, events: list[dict], first_offset: int = 0) -> list[RawRecord]:
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    return [RawRecord(event_key(e), encode_event(registry, e, "avro"), s.raw_topic, 0, first_offset + i)
            for i, e in enumerate(events)]


def _events(broken: str, healthy: str, tag: str) -> list[dict]:
    out = []
    for i in range(4):
        out.append(samples.signup(broken, f"b-{i % 2}", email=CANARY))
        out.append(samples.signup(healthy, f"h-{i % 2}", email=CANARY))
    out.append(samples.signup(broken, f"b-{tag}", email=CANARY))  # a subject with no key yet
    out.append(samples.signup(healthy, f"h-{tag}", email=CANARY))
    return out


def _rot_tenant_key(client: redis.Redis, tenant: str) -> None:
    """One bit of the wrapped tenant key flipped: still base64, the AES-GCM tag no longer verifies."""
    wrapped = bytearray(base64.b64decode(client.hget(tenant_hash_key(tenant), "v1")))
    wrapped[20] ^= 0x04
    client.hset(tenant_hash_key(tenant), "v1", base64.b64encode(bytes(wrapped)))


def _handle(rt, records):
    return asyncio.run(asyncio.wait_for(rt.pipeline.handle(records), BATCH_BOUND_S))


def test_a_damaged_tenant_key_sets_its_events_aside_and_the_others_are_delivered(make_settings):
    s = make_settings(sink_retry_max_seconds=0.2)
    broken, healthy = sorted(s.tenants)
    plain = redis.Redis.from_url(s.redis_url)
    reader = StoreReader.from_settings(s)

    # Positive control: without damage the same kind of batch is delivered whole.
    rt, _ = fresh_runtime(s)
    control = _events(broken, healthy, "control")
    result = _handle(rt, _records(s, control))
    assert result.accepted == len(control) and not result.rejected

    _rot_tenant_key(plain, broken)
    rt, metrics = fresh_runtime(s)  # a worker started after the damage (a warm cache would still hold the key)
    # An erasure for a subject of the damaged tenant and an opt-out of the healthy one, filed before
    # the batch: the batch applies them first, so they must not block either.
    p = Producer({"bootstrap.servers": s.kafka_bootstrap, "log_level": 0})
    erase = new_request("erase", broken, "b-control", "test")
    opt_out = new_request("opt_out", healthy, "h-control", "test")
    for req in (erase, opt_out):
        p.produce(s.requests_topic, req.to_json(), req.key)
    assert p.flush(30) == 0

    events = _events(broken, healthy, "after")
    result = _handle(rt, _records(s, events, first_offset=len(control)))
    n_broken = sum(e["tenant_id"] == broken for e in events)
    n_healthy = len(events) - n_broken
    assert result.accepted == n_healthy
    assert dict(result.rejected) == {"key_error": n_broken}
    assert metrics.value("streams_tenant_isolated_total", tenant=broken, reason="key_error") == n_broken
    assert metrics.value("streams_tenant_isolated_total", tenant=healthy, reason="key_error") == 0
    assert metrics.value("streams_sink_retries_total", sink="keys") == 0

    # The healthy tenant's events are in its topic and the store; none of the broken tenant's new ones.
    for e in events:
        stored = reader.get(e["tenant_id"], e["event_id"]) is not None
        assert stored == (e["tenant_id"] == healthy), e["subject_id"]
    got = read_topic(s.kafka_bootstrap, s.tenant_topic(healthy), expect=len(control) // 2 + n_healthy, timeout=60)
    assert len(got) == len(control) // 2 + n_healthy

    # The damaged tenant's events are in the DLQ as key_error, without any raw value.
    dlq = read_topic(s.kafka_bootstrap, s.dlq_topic, expect=n_broken, timeout=60)
    assert len(dlq) == n_broken
    for m in dlq:
        assert CANARY.encode() not in m.value() and b"b-after" not in m.value()
        doc = decode_dlq(m.value())
        assert doc["reason"] == "key_error" and doc["tenant"] == broken
        assert dict(m.headers())["reason"] == b"key_error"

    # The erasure was carried out although the tenant key is damaged (it needs only the subject's key).
    receipt = rt.consent.receipt(broken, erase.request_id)
    assert receipt is not None and receipt["status"] == "done"
    assert {st["step"] for st in receipt["steps"]} >= {"state", "tombstone", "store", "key"}
    erased = next(e for e in control if e["subject_id"] == "b-control")
    assert reader.get(broken, erased["event_id"]) is None
    assert rt.consent.receipt(healthy, opt_out.request_id)["status"] == "done"


def test_a_wrong_master_key_holds_every_tenant_back(make_settings, tmp_path):
    """The shared fault: nothing is set aside as key_error; the batch waits (retries counted)."""
    s = make_settings(sink_retry_max_seconds=0.2)
    broken, healthy = sorted(s.tenants)
    rt, _ = fresh_runtime(s)
    _handle(rt, _records(s, _events(broken, healthy, "control")))  # keys, check records, pseudonym secrets
    _rot_tenant_key(redis.Redis.from_url(s.redis_url), broken)

    # A worker with the wrong key file does not even start (its audit signing key does not unwrap);
    # a running worker whose key operations meet another master key (a KMS key swapped, say) is
    # this: the subject keys come from a KeyStore with the wrong master key.
    rt, metrics = fresh_runtime(s)
    rt.pipeline.keys = KeyStore(redis.Redis.from_url(s.redis_url), LocalKeyFileProvider(tmp_path / "wrong.key"))

    async def run() -> bool:
        task = asyncio.ensure_future(rt.pipeline.handle(_records(s, _events(broken, healthy, "w"), 100)))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BATCH_BOUND_S
        while not task.done() and loop.time() < deadline:
            if metrics.total("streams_sink_retries_total") >= 3:
                break
            await asyncio.sleep(0.05)
        done = task.done()
        task.cancel()
        return done

    assert asyncio.run(run()) is False  # still held back after three retries
    assert metrics.total("streams_tenant_isolated_total") == 0
    assert read_topic(s.kafka_bootstrap, s.dlq_topic, timeout=30, idle=2) == []


def _rot_pseudonym_secret(client: redis.Redis, tenant: str) -> bytes:
    """One bit of the tenant's wrapped pseudonym secret flipped; returns the record as it was."""
    stored = client.get(pseudonym_key(tenant))
    wrapped = bytearray(base64.b64decode(stored))
    wrapped[20] ^= 0x04
    client.set(pseudonym_key(tenant), base64.b64encode(bytes(wrapped)))
    return stored


def test_a_damaged_pseudonym_secret_parks_its_tenant_and_the_others_go_on(make_settings):
    """Every consent state and audit record of a tenant is filed under its pseudonym secret. Damaged,
    it failed every retry as a transient fault: the request reader and every tenant's batches waited
    for ever. Now the tenant's events are set aside (key_error), its privacy requests parked in
    order, the other tenants go on; restoring the record lets the parked requests run, in order."""
    s = make_settings(sink_retry_max_seconds=0.2)
    broken, healthy = sorted(s.tenants)
    plain = redis.Redis.from_url(s.redis_url)
    reader = StoreReader.from_settings(s)

    rt, _ = fresh_runtime(s)  # positive control: keys, check records and pseudonym secrets made
    control = _events(broken, healthy, "control")
    result = _handle(rt, _records(s, control))
    assert result.accepted == len(control) and not result.rejected
    erased = next(e for e in control if e["subject_id"] == "b-control")
    assert reader.get(broken, erased["event_id"]) is not None

    good_record = _rot_pseudonym_secret(plain, broken)
    rt, metrics = fresh_runtime(s)  # started after the damage: no secret cached
    p = Producer({"bootstrap.servers": s.kafka_bootstrap, "log_level": 0})
    erase = new_request("erase", broken, "b-control", "test")
    opt_out_after = new_request("opt_out", broken, "b-0", "test")  # parked behind the erasure
    opt_out = new_request("opt_out", healthy, "h-control", "test")
    for req in (erase, opt_out_after, opt_out):
        p.produce(s.requests_topic, req.to_json(), req.key, partition=0)
    assert p.flush(30) == 0

    events = _events(broken, healthy, "after")
    result = _handle(rt, _records(s, events, first_offset=len(control)))  # bounded: must not hang
    n_broken = sum(e["tenant_id"] == broken for e in events)
    assert result.accepted == len(events) - n_broken
    assert dict(result.rejected) == {"key_error": n_broken}
    assert metrics.value("streams_tenant_isolated_total", tenant=broken, reason="key_error") == n_broken
    assert metrics.total("streams_sink_retries_total") == 0
    for e in events:
        assert (reader.get(e["tenant_id"], e["event_id"]) is not None) == (e["tenant_id"] == healthy)

    # The healthy tenant's request is done; the broken tenant's are parked, in order, with a reason.
    assert rt.consent.receipt(healthy, opt_out.request_id)["status"] == "done"
    for req in (erase, opt_out_after):
        receipt = rt.consent.receipt(broken, req.request_id)
        assert receipt["status"] == "parked" and receipt["subject"] is None, receipt
    assert "pseudonym secret" in rt.consent.receipt(broken, erase.request_id)["parked"]["reason"]
    assert "behind earlier" in rt.consent.receipt(broken, opt_out_after.request_id)["parked"]["reason"]
    assert plain.llen(parked_requests_key(broken)) == 2
    assert metrics.value("streams_privacy_requests_parked_total", tenant=broken) == 2
    # Parked bytes are wrapped: no subject id in the clear in Redis.
    assert not any(b"b-control" in entry for entry in plain.lrange(parked_requests_key(broken), 0, -1))

    # The DLQ records of the broken tenant name no subject (no pseudonym can be made) and no value.
    dlq = read_topic(s.kafka_bootstrap, s.dlq_topic, expect=n_broken, timeout=60)
    assert len(dlq) == n_broken
    for m in dlq:
        doc = decode_dlq(m.value())
        # The requests were parked before the batch's gate ran: that is the reason it gives.
        assert doc["reason"] == "key_error" and doc["detail"] == REQUESTS_PARKED and doc["subject"] is None
        assert CANARY.encode() not in m.value() and b"b-after" not in m.value()

    # Retrying before the repair changes nothing.
    assert rt.request_reader.retry_parked(force=True) == 0
    assert plain.llen(parked_requests_key(broken)) == 2
    # Nor does a worker that does not know the tenant (one that has not read the tenant directory
    # since the tenant was onboarded): it once dropped the list as "deleted meanwhile".
    stale, _ = fresh_runtime(dataclasses.replace(s, tenants=frozenset({healthy})))
    assert broken not in stale.request_reader.tenants
    assert stale.request_reader.retry_parked(force=True) == 0
    assert plain.llen(parked_requests_key(broken)) == 2 and plain.sismember(PARKED_TENANTS_KEY, broken)
    assert rt.consent.receipt(broken, erase.request_id)["status"] == "parked"

    # An operator restores the record from a backup: the next retry carries out both, in order.
    plain.set(pseudonym_key(broken), good_record)
    assert rt.request_reader.retry_parked(force=True) == 2
    rt.requests.finish_pending()  # catch_up does this after a retry that carried some out
    assert not plain.exists(parked_requests_key(broken)) and not plain.sismember(PARKED_TENANTS_KEY, broken)
    done = rt.consent.receipt(broken, erase.request_id)
    assert done["status"] == "done" and done["subject"] is not None and "pseudonym secret" in done["parked"]["reason"]
    assert rt.consent.receipt(broken, opt_out_after.request_id)["status"] == "done"
    assert reader.get(broken, erased["event_id"]) is None
    assert metrics.value("streams_privacy_requests_unparked_total", tenant=broken) == 2

    # The tenant's events flow again; the opted-out subject's are dropped, the erased one's new key is fresh.
    again = [samples.signup(broken, "b-0", email=CANARY), samples.signup(broken, "b-1", email=CANARY),
             samples.signup(healthy, "h-1", email=CANARY)]
    rt, _ = fresh_runtime(s)  # a batch needs a runtime of its own event loop (asyncio.run per batch here)
    result = _handle(rt, _records(s, again, first_offset=1000))
    assert result.accepted == 2 and not result.rejected
    assert reader.get(broken, again[0]["event_id"]) is None
    assert reader.get(broken, again[1]["event_id"]) is not None
