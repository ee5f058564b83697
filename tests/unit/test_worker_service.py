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
