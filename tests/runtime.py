"""A worker's runtime built in the test process, as a worker (re)started now builds it: cold caches."""

from __future__ import annotations

from streams.ingest.processor import EventProcessor
from streams.ops.metrics import Metrics
from streams.runtime import Runtime, build_runtime
from streams.schema.registry import SchemaRegistry
from streams.settings import Settings


def fresh_runtime(s: Settings) -> tuple[Runtime, Metrics]:
    """The runtime and its metrics; it owns partition 0 of the raw topic."""
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    metrics = Metrics()
    rt = build_runtime(s, registry, EventProcessor(registry, s.tenants, s.max_event_bytes), metrics, "test",
                       lambda: {0})
    return rt, metrics
