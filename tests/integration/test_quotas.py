"""Per-tenant Kafka quotas on the secure stack (SASL/SCRAM broker, StandardAuthorizer).

A tenant onboarded with a tiny produce quota has its producer throttled by the broker: the
produce responses carry a throttle time, which librdkafka reports through ``throttle_cb``.
Another tenant, onboarded without a quota, sends the same bytes at the same time and is not
throttled. ``describe`` reads the quotas back from the broker; a re-run of ``create`` with a
quota changes them; ``delete`` removes them.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from confluent_kafka import Producer

from streams.settings import sasl_config
from streams.tenancy.onboarding import build_service
from streams.tenancy.quotas import parse_quota

pytestmark = [pytest.mark.integration, pytest.mark.security]

QUOTA = 10 * 1024            # bytes/s for the throttled tenant's producer
PAYLOAD = 200 * 1024         # what each producer sends
RECORD = 1000


def _send(creds: dict, topic: str, out: dict) -> None:
    throttles: list[float] = []
    conf = {**sasl_config(creds["bootstrap"], creds["username"], creds["password"]),
            "linger.ms": 5, "batch.size": 16 * 1024, "acks": "all",
            "throttle_cb": lambda ev: throttles.append(ev.throttle_time)}
    p = Producer(conf)
    errors: list[str] = []
    started = time.monotonic()
    for i in range(PAYLOAD // RECORD):
        p.produce(topic, value=b"x" * RECORD, key=str(i).encode(),
                  on_delivery=lambda err, msg: errors.append(err.name()) if err else None)
        p.poll(0)
    left = p.flush(120)
    out.update(elapsed=time.monotonic() - started, throttles=throttles, errors=errors, left=left)


def test_a_producer_over_its_quota_is_throttled_and_another_tenant_is_not(make_secure_settings) -> None:
    s = make_secure_settings()
    svc = build_service(s, "test:quotas")
    slow, free = f"t{uuid.uuid4().hex[:8]}", f"t{uuid.uuid4().hex[:8]}"
    created = svc.create(slow, quota=parse_quota(f"produce={QUOTA},fetch=20480,request=50"))
    assert [st for st in created["steps"] if st["step"] == "kafka_quotas"] == [
        {"step": "kafka_quotas", "at_ms": pytest.approx(time.time() * 1000, abs=60_000),
         "produce": float(QUOTA), "fetch": 20480.0, "request": 50.0}]
    creds = {slow: created["credentials"], free: svc.create(free)["credentials"]}

    # describe: as the broker holds them, on the right principals.
    q = svc.describe(slow)["quotas"]
    assert q["quota"] == {"produce": QUOTA, "fetch": 20480, "request": 50.0}
    assert q["by_principal"] == {f"producer-{slow}": {"producer_byte_rate": float(QUOTA), "request_percentage": 50.0},
                                 f"tenant-{slow}": {"consumer_byte_rate": 20480.0, "request_percentage": 50.0}}
    assert svc.describe(free)["quotas"]["quota"] == {}

    # Both tenants' producers send 200 KiB at once; only the one with a 10 KiB/s quota is throttled.
    results: dict[str, dict] = {slow: {}, free: {}}
    threads = [threading.Thread(target=_send, args=(creds[t]["producer"], creds[t]["producer"]["topic"], results[t]))
               for t in (slow, free)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    r_slow, r_free = results[slow], results[free]
    assert r_slow["errors"] == [] and r_slow["left"] == 0, r_slow      # throttled, not refused: all delivered
    assert r_free["errors"] == [] and r_free["left"] == 0, r_free
    # The broker's signal: produce responses with a throttle time, reported by librdkafka.
    assert r_slow["throttles"] and max(r_slow["throttles"]) > 0, r_slow
    # Corroboration only: 200 KiB at 10 KiB/s (the broker allows ~10 s of quota as a first burst)
    # cannot finish in 3 s once throttled.
    assert r_slow["elapsed"] >= 3.0, r_slow
    # The other tenant's producer, on the same broker at the same time, is not throttled.
    assert not [t for t in r_free["throttles"] if t > 0], r_free

    # A re-run with a quota changes it (and makes no credential); without one it leaves it.
    again = svc.create(slow, quota=parse_quota("produce=none,request=25"))
    assert again["credentials"] == {}
    assert svc.describe(slow)["quotas"]["quota"] == {"fetch": 20480, "request": 25.0}
    svc.create(slow)
    assert svc.describe(slow)["quotas"]["quota"] == {"fetch": 20480, "request": 25.0}

    # delete removes them from the broker.
    receipt = svc.delete(slow)
    assert any(st["step"] == "kafka_quotas" for st in receipt["steps"])
    assert svc.quotas.describe([f"producer-{slow}", f"tenant-{slow}"]) == {f"producer-{slow}": {},
                                                                           f"tenant-{slow}": {}}
    svc.delete(free)
