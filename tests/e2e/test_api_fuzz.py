"""Schemathesis fuzzes the running worker's API from its own /openapi.json: no input may cause a 5xx.

Positive cases (inputs the document allows) and negative ones (inputs it
forbids), once with the tenant path parameter free (mostly other tenants:
403) and once pinned to the key's own tenant, so the cases reach validation,
the store and the Detokenizer. The tenant management routes are fuzzed with
the same (tenant) keys: every case must be a 403, and no tenant may be
created, changed or deleted. Bounded to stay well under a minute.
"""

from __future__ import annotations

import random

import pytest
import redis
from hypothesis import HealthCheck, given, settings

from streams.api.api_keys import ApiKeyStore, Role
from streams.api.routes import ROUTES
from streams.ingest import samples
from streams.ingest.producer import EventProducer
from streams.schema.registry import SchemaRegistry
from streams.tenancy.registry import TenantRegistry
from tests.e2e.test_api_http import call, free_port, wait_until

schemathesis = pytest.importorskip("schemathesis")
from schemathesis import GenerationMode  # noqa: E402

pytestmark = pytest.mark.e2e

EXAMPLES = 25


def test_no_input_makes_the_api_fail(make_settings, start_worker):
    # The fuzzer is a flood of mostly denied calls from one address: with the rate limits on, most cases would be
    # answered 429 before they reach validation. They are off here; tests/security/test_api_flood.py attacks them.
    s = make_settings(web_enabled=True, web_port=free_port(), api_rate_per_key=0.0, api_denied_rate_per_key=0.0,
                      api_rate_per_address=0.0)
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

    tenants_before = [r.to_json() for r in TenantRegistry(redis.Redis.from_url(s.redis_url)).all()]
    control_paths = {r.template for r in ROUTES if r.control}
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    failures: list[str] = []
    control_statuses: dict[str, set[int]] = {}
    calls = 0
    ran: set[tuple[str, GenerationMode]] = set()
    not_negated: list[str] = []  # (operation, why) that got no negative cases
    for result in schema.get_all_operations():
        op = result.ok()
        token = detokenizer if op.method.upper() == "POST" else reader
        headers = {"Authorization": f"Bearer {token}"}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            pinned = {"tenant": tenant} if "{tenant}" in op.path else None
            for path_parameters in ([None, pinned] if pinned else [None]):
                label = f"{op.method.upper()} {op.path} {'pinned' if path_parameters else 'free'}"
                try:
                    strategy = op.as_strategy(generation_mode=mode, path_parameters=path_parameters)
                except Exception as exc:  # an operation schemathesis cannot negate (nothing to violate)
                    if mode is GenerationMode.NEGATIVE:
                        not_negated.append(f"{label}: {type(exc).__name__}: {exc}"[:300])
                        continue
                    raise
                ran.add((label, mode))

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
                    if case.operation.path in control_paths:
                        control_statuses.setdefault(f"{case.method} {case.operation.path}", set()).add(
                            response.status_code)

                run()
    assert calls > 100
    # Every operation ran positive cases; operations left without negative ones are counted, and
    # they must be the few with nothing to violate, not a silent majority.
    positive = {label for label, mode in ran if mode is GenerationMode.POSITIVE}
    negative = {label for label, mode in ran if mode is GenerationMode.NEGATIVE}
    assert negative, f"no negative case ran: {not_negated}"
    assert len(negative) + len(not_negated) == len(positive), (negative, not_negated)
    assert len(not_negated) <= len(positive) // 4, f"{len(not_negated)} of {len(positive)} not negated: {not_negated}"
    assert not failures, "\n".join(failures[:20])
    # Tenant keys reach none of the tenant management routes, whatever they send.
    assert {k.split(" ", 1)[1] for k in control_statuses} == control_paths
    assert all(statuses == {403} for statuses in control_statuses.values()), control_statuses
    assert [r.to_json() for r in TenantRegistry(redis.Redis.from_url(s.redis_url)).all()] == tenants_before
    assert worker.traceback_excerpt() is None, worker.traceback_excerpt()
