"""The worker's service: its stop closes the API (last denial counts audited) before the runtime,
and a runtime that never started is not waited for at stop."""

from __future__ import annotations

import asyncio
from typing import Any

from streams.ops.metrics import Metrics
from streams.settings import Settings
from streams.worker_service import WorkerService


class Closing:
    def __init__(self, name: str, order: list[str]) -> None:
        self.name, self.order = name, order

    def close(self) -> None:  # the API's (blocking)
        self.order.append(self.name)


class Runtime:
    def __init__(self, order: list[str]) -> None:
        self.order = order

    async def close(self) -> None:
        self.order.append("runtime")


def _service() -> WorkerService:
    return WorkerService(Settings(), None, None, None, Metrics(), lambda: set())  # type: ignore[arg-type]


def test_stop_closes_the_api_then_the_runtime():
    order: list[str] = []
    svc = _service()
    svc.api, svc.runtime = Closing("api", order), Runtime(order)  # type: ignore[assignment]
    asyncio.run(svc.on_stop())
    assert order == ["api", "runtime"]


def test_stop_before_start_closes_nothing_and_does_not_hang():
    asyncio.run(asyncio.wait_for(_service().on_stop(), 5))


def test_processed_offsets_only_move_forward():
    svc = _service()
    svc.mark_processed({("events.raw", 0): 10})
    svc.mark_processed({("events.raw", 0): 7, ("events.raw", 1): 3})
    assert svc.processed == {("events.raw", 0): 10, ("events.raw", 1): 3}


def test_wait_runtime_returns_once_started():
    async def run() -> Any:
        svc = _service()
        waiter = asyncio.ensure_future(svc.wait_runtime())
        await asyncio.sleep(0.01)
        assert not waiter.done()
        svc.runtime = "rt"  # type: ignore[assignment]
        svc._runtime_ready.set()
        return await asyncio.wait_for(waiter, 1)
    assert asyncio.run(run()) == "rt"


def test_raw_topic_is_pruned_only_up_to_what_the_group_committed_and_only_where_assigned() -> None:
    from streams.worker_service import prunable

    processed = {("events.raw", 0): 900, ("events.raw", 1): 50, ("events.raw", 2): 70, ("events.raw.acme", 0): 30}
    committed = {("events.raw", 0): 191, ("events.raw", 1): 80, ("events.raw", 3): 10}
    # p0: Faust committed 191 although this worker processed up to 900 (records it dropped are below):
    # only 191. p1: committed ahead of this worker's own progress: its own. p2: not assigned any
    # more: its new owner prunes. A tenant's raw topic (not Faust's): what was processed.
    assert prunable(processed, committed, "events.raw") == {
        ("events.raw", 0): 191, ("events.raw", 1): 50, ("events.raw.acme", 0): 30}
    assert prunable(processed, None, None) == processed
