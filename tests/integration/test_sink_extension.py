"""A sink added to the registry (streams/sinks/registry.py) on the real broker and Redis: the
worker writes it after the store and the tenant topic, an erasure erases it (its step in the
receipt, the event ids from the store's index), a tenant deletion drops it, and the worker's stop
closes it. The sink itself is a test-only one that records what it gets (tests/recording_sink.py)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from streams.consent.requests import new_request
from streams.ingest import samples
from streams.ingest.batch import RawRecord
from streams.ingest.processor import EventProcessor
from streams.ingest.producer import encode_event, event_key
from streams.ops.metrics import Metrics
from streams.runtime import build_runtime
from streams.schema.registry import SchemaRegistry
from streams.sinks import registry as sink_registry
from streams.tenancy.onboarding import build_service
from tests.recording_sink import RecordingSink

pytestmark = pytest.mark.integration


def test_a_registered_sink_is_written_erased_dropped_and_closed(make_settings, monkeypatch):
    s = make_settings()
    tenant = sorted(s.tenants)[0]
    extra = RecordingSink()
    # The test hook: one more factory in the registry, as a new sink's registration line would add.
    monkeypatch.setattr(sink_registry, "SINKS", [*sink_registry.SINKS, lambda deps: extra])
    schemas = SchemaRegistry.load_dir(s.schemas_dir)
    rt = build_runtime(s, schemas, EventProcessor(schemas, s.tenants, s.max_event_bytes), Metrics(), "test",
                       lambda: set())
    assert rt.sinks[-1] is extra and rt.requests.sinks[-1] is extra and rt.pipeline.sinks[-1] is extra
    gone, kept = f"gone-{uuid.uuid4().hex[:6]}", f"kept-{uuid.uuid4().hex[:6]}"
    events = [samples.order(tenant, subj) for subj in (gone, kept, gone)]
    records = [RawRecord(event_key(e), encode_event(schemas, e, "avro"), s.raw_topic, 0, i)
               for i, e in enumerate(events)]
    svc = build_service(s, "test:sinks")
    svc.fence_seconds = 0.1  # no worker re-reads the registry here

    async def run() -> tuple[dict, dict]:
        loop = asyncio.get_running_loop()
        result = await rt.pipeline.handle(records)
        assert result.accepted == 3
        assert {subj for _, subj, _ in extra.events} == {gone, kept}
        req = new_request("erase", tenant, gone, "test:sinks")
        await loop.run_in_executor(None, rt.requests.handle, req)
        await loop.run_in_executor(None, rt.requests.finish_pending)
        erased = rt.consent.receipt(tenant, req.request_id)
        deleted = await loop.run_in_executor(None, svc.delete, tenant)
        await rt.close()
        return erased, deleted

    erased, deleted = asyncio.run(run())

    # The erasure reached the new sink, before the tenant topic and the store (reverse write order),
    # with the subject's event ids read from the store's index.
    assert erased["status"] == "done"
    assert [st["step"] for st in erased["steps"]] == ["state", "recording", "tombstone", "store", "key", "quarantine", "dlq",
                                                       "aof", "audit"]
    step = next(st for st in erased["steps"] if st["step"] == "recording")
    assert step["events"] == 2 and step["ids_from_index"] == 2
    assert sorted(extra.erasures[0].event_ids) == sorted(str(e["event_id"]) for e in events[::2])
    assert gone not in str(erased["steps"])  # the receipt names no subject id
    # The tenant deletion reached it too, before the topics and the store.
    steps = [st["step"] for st in deleted["steps"]]
    assert steps.index("recording") < steps.index("topics") < steps.index("store")
    assert extra.dropped == [tenant] and not extra.events
    # The worker's stop closed it.
    assert extra.closed
