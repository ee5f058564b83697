"""The worker's consumer thread stops cleanly when aiokafka's fetcher close re-raises a cancellation.

aiokafka 0.14 ``Fetcher.close`` cancels each pending fetch task and awaits it; a task cancelled in
its retry back-off re-raises CancelledError out of ``close`` (seen on the secure stack, where the
broker drops connections that do not re-authenticate): the worker's consumer thread died and the
worker was killed after its stop timeout.
"""

from __future__ import annotations

import asyncio

import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka

from streams.app import _ReadCommittedConsumerThread, finish_consumer_stop


class _Client:
    def __init__(self) -> None:
        self.closed = False

    async def close(self) -> None:
        self.closed = True


class _Fetcher:
    def __init__(self, tasks: list[asyncio.Task]) -> None:
        self._pending_tasks = set(tasks)


class _Consumer:
    def __init__(self, tasks: list[asyncio.Task]) -> None:
        self._fetcher = _Fetcher(tasks)
        self._client = _Client()


async def _in_backoff() -> bool:
    try:
        raise ConnectionError("connection closed by the broker")
    except ConnectionError:
        await asyncio.sleep(3600)  # aiokafka sleeps its retry back-off here, outside its CancelledError guard
        return False


def test_finish_consumer_stop_cancels_what_is_left_and_closes_the_client():
    async def run() -> tuple[list[asyncio.Task], _Consumer]:
        tasks = [asyncio.create_task(_in_backoff()) for _ in range(3)]
        await asyncio.sleep(0)
        consumer = _Consumer(tasks)
        await finish_consumer_stop(consumer)
        return tasks, consumer

    tasks, consumer = asyncio.run(run())
    assert all(t.cancelled() for t in tasks)
    assert consumer._client.closed


def test_the_thread_finishes_the_stop_instead_of_dying(monkeypatch):
    async def stop_raising(self) -> None:  # what faust's on_thread_stop does when aiokafka's close raises
        raise asyncio.CancelledError()

    monkeypatch.setattr(faust_aiokafka.AIOKafkaConsumerThread, "on_thread_stop", stop_raising)
    thread = object.__new__(_ReadCommittedConsumerThread)

    async def run() -> _Consumer:
        tasks = [asyncio.create_task(_in_backoff())]
        await asyncio.sleep(0)
        consumer = _Consumer(tasks)
        thread._consumer = consumer
        await thread.on_thread_stop()  # must not raise
        return consumer

    consumer = asyncio.run(run())
    assert consumer._client.closed


def test_a_cancellation_of_the_stopping_task_itself_still_propagates(monkeypatch):
    async def stop_slowly(self) -> None:
        await asyncio.sleep(3600)

    monkeypatch.setattr(faust_aiokafka.AIOKafkaConsumerThread, "on_thread_stop", stop_slowly)
    thread = object.__new__(_ReadCommittedConsumerThread)

    async def run() -> None:
        thread._consumer = _Consumer([])
        stopping = asyncio.create_task(thread.on_thread_stop())
        await asyncio.sleep(0)
        stopping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stopping
        assert not thread._consumer._client.closed

    asyncio.run(run())
