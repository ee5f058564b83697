"""Schemathesis fuzzes the running worker's API from its own /openapi.json: no input may cause a 5xx.

Positive cases (inputs the document allows) and negative ones (inputs it
forbids), once with the tenant path parameter free (mostly other tenants:
403) and once pinned to the key's own tenant, so the cases reach validation,
the store and the Detokenizer. Bounded to stay well under a minute.
"""

from __future__ import annotations

import random

import pytest
import redis
from hypothesis import HealthCheck, given, settings

from streams.api.api_keys import ApiKeyStore, Role
from streams.ingest import samples
from streams.ingest.producer import EventProducer
from streams.schema.registry import SchemaRegistry
from tests.e2e.test_api_http import call, free_port, wait_until

schemathesis = pytest.importorskip("schemathesis")
from schemathesis import GenerationMode  # noqa: E402

pytestmark = pytest.mark.e2e

EXAMPLES = 25


def test_no_input_makes_the_api_fail(make_settings, start_worker):
    s = make_settings(web_enabled=True, web_port=free_port())
    tenant = sorted(s.tenants)[0]
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    rng = random.Random(3)
    producer = EventProducer(s.kafka_bootstrap, s.raw_topic, registry)
    producer.send_many([samples.signup(tenant, f"u-{i}", rng) for i in range(3)]
                       + [samples.order(tenant, "u-0", rng) for _ in range(3)])
    producer.flush()
    keys = ApiKeyStore(redis.Redis.from_url(s.redis_url))
    _, reader = keys.create(tenant, Role.READER, "fuzz")
    _, detokenizer = keys.create(tenant, Role.DETOKENIZER, "fuzz")
    worker = start_worker(s)
    base = f"http://127.0.0.1:{s.web_port}"
    wait_until(lambda: call(base, f"/v1/tenants/{tenant}/counts", reader)[2].get("count") == 6, what="the store")

    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    failures: list[str] = []
    calls = 0
    for result in schema.get_all_operations():
        op = result.ok()
        token = detokenizer if op.method.upper() == "POST" else reader
        headers = {"Authorization": f"Bearer {token}"}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            pinned = {"tenant": tenant} if "{tenant}" in op.path else None
            for path_parameters in ([None, pinned] if pinned else [None]):
                try:
                    strategy = op.as_strategy(generation_mode=mode, path_parameters=path_parameters)
                except Exception:  # an operation schemathesis cannot negate (nothing to violate)
                    if mode is GenerationMode.NEGATIVE:
                        continue
                    raise

                @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                          suppress_health_check=list(HealthCheck))
                @given(case=strategy)
                def run(case) -> None:
                    nonlocal calls
                    response = case.call(base_url=base, headers=headers, timeout=30)
                    calls += 1
                    if response.status_code >= 500:
                        failures.append(f"{case.method} {case.formatted_path} {case.query} -> "
                                        f"{response.status_code} {response.text[:200]}")

                run()
    assert calls > 100
    assert not failures, "\n".join(failures[:20])
    assert "Traceback" not in worker.log_text()
