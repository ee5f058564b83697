"""Making Redis' files forget deleted values: an AOF rewrite and, when snapshots are on, a fresh RDB.

A DEL removes a value from memory only; the append-only file and any ``dump.rdb`` keep it until
they are rewritten. Every erasure (``streams.erasure.executor``) and tenant deletion
(``streams.tenancy.onboarding``) ends here before it may report itself done.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import redis


def _wait_persistence(client: redis.Redis, busy: Callable[[dict[str, Any]], bool], deadline: float, what: str) -> dict[str, Any]:
    while True:
        info = client.info("persistence")
        if not busy(info):
            return info
        if time.monotonic() > deadline:
            raise TimeoutError(f"Redis {what} not finished in time")
        time.sleep(0.05)


def _snapshots_configured(client: redis.Redis) -> bool | None:
    """Whether Redis writes RDB snapshots (``save`` points); None when CONFIG GET is not allowed."""
    try:
        return bool(str(client.config_get("save").get("save", "")).strip())
    except redis.ResponseError:
        return None


def rewrite_aof(client: redis.Redis, timeout: float = 60.0) -> dict[str, Any]:
    """Make Redis' files drop deleted values, and say what was done: rewrite the AOF when it is on
    (start or join a rewrite and wait until one that began after our deletes has finished), and
    write a fresh RDB snapshot when snapshots are configured (a dump.rdb would keep them too).

    Returns ``{"aof": "rewritten" | "disabled"}`` plus ``"rdb": "rewritten"`` (snapshots on),
    ``"rdb": "unknown"`` (CONFIG GET not allowed) or ``"persistence": "none"`` (neither AOF nor
    snapshots: nothing is on disk). Raises RuntimeError when a rewrite or save failed and
    TimeoutError when it did not finish in ``timeout`` s: the caller must then not report the
    erasure as done.
    """
    deadline = time.monotonic() + timeout
    out: dict[str, Any] = {}
    info = client.info("persistence")
    if info.get("aof_enabled"):
        try:
            client.bgrewriteaof()  # schedules one if a rewrite is already running
        except redis.ResponseError:
            pass
        info = _wait_persistence(client, lambda i: bool(i.get("aof_rewrite_in_progress") or i.get("aof_rewrite_scheduled")),
                                 deadline, "AOF rewrite")
        if info.get("aof_last_bgrewrite_status") != "ok":
            raise RuntimeError("Redis AOF rewrite failed")
        out["aof"] = "rewritten"
    else:
        out["aof"] = "disabled"
    snapshots = _snapshots_configured(client)
    if snapshots:
        while True:  # a save already running may have begun before our deletes: start our own
            _wait_persistence(client, lambda i: bool(i.get("rdb_bgsave_in_progress") or i.get("aof_rewrite_in_progress")),
                              deadline, "RDB snapshot")
            try:
                client.bgsave()
                break
            except redis.ResponseError:  # another one started meanwhile
                continue
        info = _wait_persistence(client, lambda i: bool(i.get("rdb_bgsave_in_progress")), deadline, "RDB snapshot")
        if info.get("rdb_last_bgsave_status") != "ok":
            raise RuntimeError("Redis RDB snapshot failed")
        out["rdb"] = "rewritten"
    elif snapshots is None:
        out["rdb"] = "unknown"
    elif out["aof"] == "disabled":
        out["persistence"] = "none"
    return out
