"""Tenant management over HTTP on a real worker, as an operator does it: an operator key made with
`streams apikeys create --role operator`, a tenant onboarded with POST /v1/tenants, its reader key used on
its data route, then the tenant deleted with confirmation and its receipt checked.
"""

from __future__ import annotations

import json
import random
import uuid

import pytest

from streams.audit.log import read_all
from streams.ingest import samples
from streams.ingest.producer import EventProducer
from streams.schema.registry import SchemaRegistry
from tests.e2e.test_api_http import call, free_port, wait_until
from tests.e2e.test_cli_apikeys import apikeys

pytestmark = pytest.mark.e2e


def test_onboard_use_and_delete_a_tenant_over_http(make_settings, start_worker):
    s = make_settings(web_enabled=True, web_port=free_port())
    worker = start_worker(s)
    base = f"http://127.0.0.1:{s.web_port}"
    made = apikeys(s, "create", "--role", "operator", "--label", "e2e")
    assert made.returncode == 0, made.stderr
    operator = json.loads(made.stdout)
    op, op_actor = operator["token"], f"api:{operator['key_id']}"
    tenant = f"op{uuid.uuid4().hex[:8]}"

    status, hdrs, body = call(base, "/v1/tenants", op, "POST", {"name": tenant, "roles": ["reader"]})
    assert status == 201, body
    assert hdrs["Location"] == f"/v1/tenants/{tenant}" and hdrs["Cache-Control"] == "no-store"
    assert body["status"] == "created" and {k["role"] for k in body["credentials"]["api_keys"]} == {"reader"}
    reader = body["credentials"]["api_keys"][0]["token"]
    status, _, again = call(base, "/v1/tenants", op, "POST", {"name": tenant, "roles": ["reader"]})
    assert status == 200 and again["status"] == "exists" and again["credentials"] == {}

    # The new tenant's data route answers its reader key (every worker re-reads the tenants every 2 s).
    path = f"/v1/tenants/{tenant}/events"
    wait_until(lambda: call(base, path, reader)[0] == 200, timeout=15, what="the new tenant served")
    status, _, page = call(base, path, reader)
    assert status == 200 and page["events"] == [] and page["paging"]["returned"] == 0
    # ... and the worker takes its events: it is onboarded for the pipeline too.
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    producer = EventProducer(s.kafka_bootstrap, s.raw_topic, registry)
    producer.send_many([samples.signup(tenant, "u-1", random.Random(5))])
    producer.flush()
    wait_until(lambda: call(base, f"/v1/tenants/{tenant}/counts", reader)[2].get("count") == 1,
               what="the new tenant's event in the store")

    # Its reader key may not manage tenants; the operator key reads no tenant data.
    assert call(base, "/v1/tenants", reader)[0] == 403
    assert call(base, f"/v1/tenants/{tenant}", reader, "DELETE")[0] == 403
    assert call(base, path, op)[0] == 403

    status, _, listed = call(base, "/v1/tenants", op)
    assert status == 200 and tenant in {t["tenant"] for t in listed["tenants"]}
    status, _, desc = call(base, f"/v1/tenants/{tenant}", op)
    assert status == 200 and desc["topics"] == {s.tenant_topic(tenant): s.tenant_partitions,
                                             s.tenant_raw_topic(tenant): s.partitions}

    # A stray DELETE does nothing.
    status, _, err = call(base, f"/v1/tenants/{tenant}", op, "DELETE")
    assert status == 400 and "confirm" in err["error"]["message"]
    status, _, err = call(base, f"/v1/tenants/{tenant}?confirm=acme", op, "DELETE")
    assert status == 400 and err["error"]["code"] == "confirmation_required"
    assert call(base, path, reader)[0] == 200

    status, _, receipt = call(base, f"/v1/tenants/{tenant}?confirm={tenant}", op, "DELETE")
    assert status == 200, receipt
    assert receipt["tenant"] == tenant and receipt["status"] == "done" and receipt["requested_by"] == op_actor
    steps = {st["step"]: st for st in receipt["steps"]}
    assert steps["store"]["deleted_keys"] > 0 and steps["api_keys"]["revoked"] == 1
    assert sorted(steps["topics"]["deleted"]) == sorted([s.tenant_topic(tenant), s.tenant_raw_topic(tenant)])
    assert receipt["started_at_ms"] <= receipt["completed_at_ms"]

    status, _, _ = call(base, path, reader)
    assert status == 401  # its keys were revoked
    status, _, err = call(base, f"/v1/tenants/{tenant}", op)
    assert status == 404 and err["error"]["code"] == "not_found"

    records = [rec for _, rec in read_all(s.kafka_bootstrap, s.audit_topic)]
    mine = [(r["action"], r["actor"]) for r in records if r.get("tenant") == tenant and r["action"].startswith("tenant.")]
    assert mine == [("tenant.create", op_actor), ("tenant.create", op_actor), ("tenant.delete", op_actor)]
    assert any(r["action"] == "apikey.create" and r["details"]["key_id"] == operator["key_id"] for r in records)
    text = json.dumps(records)
    assert op.split("_", 2)[2] not in text and reader.split("_", 2)[2] not in text
    assert worker.traceback_excerpt() is None, worker.traceback_excerpt()
