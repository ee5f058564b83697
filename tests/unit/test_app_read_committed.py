"""The worker's Faust consumer reads read_committed (faust-streaming has no setting for it).

The behaviour itself (aborted records never delivered, an open transaction's bound) is tested on
the real broker in tests/e2e/test_raw_transactions.py; this checks the wiring without one.
"""

from __future__ import annotations

import asyncio
import dataclasses

from streams.app import create_app
from streams.settings import Settings


def test_the_worker_consumer_is_created_read_committed():
    async def isolation() -> str:
        app = create_app(dataclasses.replace(Settings.from_env({}), web_enabled=False))
        consumer = app.consumer._thread._create_worker_consumer(app.transport)  # not started: no broker needed
        try:
            return consumer._isolation_level
        finally:
            await consumer.stop()

    assert asyncio.run(isolation()) == "read_committed"
