"""Named fault points for fault-injection tests (like FreeBSD's failpoints or TiKV's fail-rs).

``STREAMS_FAILPOINTS=erasure.tombstone,erasure.key`` makes the process kill itself
with SIGKILL the first time it reaches one of those points, exactly between two
steps, so a test can prove that a restart completes the work.

``STREAMS_FAILPOINTS=batch.gated=sleep:3000`` makes the process pause 3 s every time it
reaches that point instead: a race that needs one worker to be slow at an exact moment
(an erasure applied by another worker while a batch is between its consent check and its
sinks) is then hit on every run instead of by luck. Each pause is logged with the point's
name and the caller's context (partitions, never record content), so a test can wait for
the moment it needs.

Unset (always, in production) a failpoint costs one dict lookup.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

log = logging.getLogger(__name__)


def _parse(spec: str) -> dict[str, float | None]:
    """{point: seconds to sleep, or None to kill}."""
    out: dict[str, float | None] = {}
    for item in spec.split(","):
        name, _, action = item.strip().partition("=")
        if not name:
            continue
        if action.startswith("sleep:"):
            out[name] = int(action[len("sleep:"):]) / 1000
        elif action in ("", "kill"):
            out[name] = None
        else:
            raise ValueError(f"STREAMS_FAILPOINTS: unknown action {action!r} for {name!r} (kill or sleep:<ms>)")
    return out


_ACTIVE = _parse(os.environ.get("STREAMS_FAILPOINTS", ""))


def _pause(name: str, context: str) -> float | None:
    """The pause configured for ``name`` (logged), or None; a ``kill`` failpoint ends the process here."""
    if name not in _ACTIVE:
        return None
    pause = _ACTIVE[name]
    if pause is None:
        os.kill(os.getpid(), signal.SIGKILL)
        return None
    log.warning("failpoint %s: sleeping %d ms %s", name, pause * 1000, context)
    return pause


def failpoint(name: str, context: str = "") -> None:
    """Kill the process, or sleep (blocking), if ``name`` is configured."""
    pause = _pause(name, context)
    if pause is not None:
        time.sleep(pause)


async def failpoint_async(name: str, context: str = "") -> None:
    """Like ``failpoint`` on the event loop: a sleep there yields (the worker's heartbeats go on)."""
    pause = _pause(name, context)
    if pause is not None:
        await asyncio.sleep(pause)
