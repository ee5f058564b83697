"""The worker's own runtime as a service with a start and a stop.

Faust's app (``streams.app``) owns the consumer, the agents and the web server; this service owns
everything of the project a worker process holds: the sinks, the audit log, the privacy-request
reader, the producers and Redis clients (``streams.runtime.Runtime``), the data API, and the raw
offsets processed so far (what the raw pruner may delete). Timers and agents ask it for the
runtime (``wait_runtime``) instead of sharing cells.

Start: by the app's first task, since building the runtime does blocking I/O (in a thread) and
needs the consumer's assignment. Stop: from Faust's ``on_before_shutdown``, which comes after
the consumer stopped and the streams are empty, so the order is ours: the API's last window of
denial counts goes to the audit trail, then the runtime flushes and closes the sinks, the
request reader, the audit log and the clients (``Runtime.close``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Callable

from mode import Service

from streams.api.service import DataApi, build_data_api
from streams.ingest.processor import EventProcessor
from streams.ops import metric_catalogue as M
from streams.ops.metrics import Metrics
from streams.runtime import Runtime, build_runtime
from streams.schema.registry import SchemaRegistry
from streams.settings import Settings
from streams.tenancy.registry import TenantDirectory

log = logging.getLogger(__name__)

API_CLOSE_TIMEOUT_S = 15.0  # the last denial counts are dropped rather than hold up a stop with the broker away


class WorkerService(Service):
    def __init__(self, settings: Settings, registry: SchemaRegistry, processor: EventProcessor,
                 tenants: TenantDirectory, metrics: Metrics, own_partitions: Callable[[], set[int]]) -> None:
        super().__init__()
        self.settings = settings
        self.registry = registry
        self.processor = processor
        self.tenants = tenants
        self.metrics = metrics
        self.own_partitions = own_partitions
        self.runtime: Runtime | None = None
        self.api: DataApi | None = None
        #: (raw topic, partition) -> next offset this worker finished: what the pruner may delete
        self.processed: dict[tuple[str, int], int] = {}
        self._runtime_ready = asyncio.Event()

    async def on_start(self) -> None:
        loop = asyncio.get_running_loop()
        s = self.settings
        self.runtime = await loop.run_in_executor(
            None, build_runtime, s, self.registry, self.processor, self.metrics, f"worker:{s.app_id}",
            self.own_partitions, self.tenants)
        # The data API once the runtime exists (until then its pages answer 503). Tenants: the live
        # directory (configured + onboarded), re-read every 2 s, and at once after the operator
        # routes created or deleted one (other workers follow within that interval).
        self.api = await loop.run_in_executor(None, functools.partial(
            build_data_api, s, self.runtime.audit, lambda: frozenset(self.tenants),
            on_tenants_changed=lambda: self.tenants.refresh(force=True)))
        self._runtime_ready.set()

    async def on_stop(self) -> None:
        if self.api is not None:
            try:
                await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, self.api.close),
                                       API_CLOSE_TIMEOUT_S)
            except Exception as exc:
                log.warning("api: the last denial counts were not audited (%s)", type(exc).__name__)
        if self.runtime is not None:
            await self.runtime.close()

    async def wait_runtime(self) -> Runtime:
        await self._runtime_ready.wait()
        assert self.runtime is not None
        return self.runtime

    def mark_processed(self, offsets: dict[tuple[str, int], int]) -> None:
        for tp, nxt in offsets.items():
            if nxt > self.processed.get(tp, 0):
                self.processed[tp] = nxt

    async def apply_privacy_requests(self) -> None:
        """Carry out privacy requests when no batch does (a batch applies them first anyway)."""
        rt = self.runtime
        if rt is not None and not rt.lock.locked():
            async with rt.lock:
                await rt.pipeline.apply_requests()

    async def prune_raw_events(self, committed: dict[tuple[str, int], int | None] | None = None,
                               raw_topic: str | None = None) -> None:
        """Raw PII stays only until processed (``streams.ingest.raw_pruning``). Best effort: a
        failure is retried at the next tick; the topic's retention is the backstop.

        ``committed``: for ``raw_topic`` (Faust's), each assigned partition's committed offset: it
        is pruned up to the lower of that and what this worker processed, and a partition not
        assigned (any more) is left to its owner."""
        rt = self.runtime
        if rt is None:
            return
        wanted = prunable(self.processed, committed, raw_topic)
        try:
            moved = await asyncio.get_running_loop().run_in_executor(None, rt.raw_pruner.prune, wanted)
        except Exception as exc:
            log.warning("pruning processed raw events failed: %s", type(exc).__name__)
            return
        if moved:
            self.metrics.inc(M.RAW_PRUNES, len(moved))

    async def refresh_tenants(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.tenants.refresh)


def prunable(processed: dict[tuple[str, int], int], committed: dict[tuple[str, int], int | None] | None,
             raw_topic: str | None) -> dict[tuple[str, int], int]:
    """What may be pruned: every processed offset of other topics; of ``raw_topic`` only assigned
    partitions, up to their committed offset."""
    out: dict[tuple[str, int], int] = {}
    for tp, nxt in processed.items():
        if raw_topic is not None and committed is not None and tp[0] == raw_topic:
            cap = committed.get(tp)
            if cap is None:
                continue
            nxt = min(nxt, cap)
        out[tp] = nxt
    return out
