"""The queryable store in Redis: clean events by id, indexed by subject, type and time.

``StoreWriter`` is the worker's async sink; ``StoreReader`` is the synchronous
query side used by the CLI, the tests and (later) the API.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from typing import Any, Iterable

import redis
import redis.asyncio as aioredis

from streams.ingest.processor import Accepted
from streams.sinks import store_keys as K
from streams.sinks.exceptions import SinkUnavailable, TenantsDeleted
from streams.tenancy.registry import deleted_marker


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.isoformat(timespec="milliseconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    return value


def store_document(a: Accepted) -> str:
    return json.dumps({
        "event_id": a.event_id,
        "event_type": a.event_type,
        "tenant": a.tenant,
        "subject": a.subject,
        "event_time_ms": a.event_time_ms,
        "schema": a.clean_entry.fullname,
        "event": _jsonable(a.clean_datum),
    }, separators=(",", ":"))


# One script call per tenant and batch instead of four commands per event: the
# script runs atomically (an event and its index entries land together), and
# the worker parses one reply instead of thousands (profiled: the MULTI/EXEC
# version spent more time in redis-py's reply parsing than in Redis).
# KEYS: the tenant's deleted marker, then per event its document, subject-index, type-index and
# time-index keys. ARGV: per event, event id, event time (ms), document.
# A deleted tenant (marker set) gets nothing written, atomically: a batch that was validated
# before the workers learnt of the deletion cannot bring its data back after the purge.
WRITE_EVENTS_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local n = #ARGV / 3
for i = 0, n - 1 do
  local id, score, doc = ARGV[i*3+1], ARGV[i*3+2], ARGV[i*3+3]
  redis.call('SET', KEYS[i*4+2], doc)
  redis.call('ZADD', KEYS[i*4+3], score, id)
  redis.call('ZADD', KEYS[i*4+4], score, id)
  redis.call('ZADD', KEYS[i*4+5], score, id)
end
return n
"""


def stats_key(tenant: str) -> str:
    # Pipeline-only keyspace: the counts are the operator's, not the tenant's data.
    return f"k:{{{tenant}}}:stats"


def write_calls(events: Iterable[Accepted]) -> dict[str, tuple[list[str], list[Any]]]:
    """{tenant: (KEYS, ARGV)} of WRITE_EVENTS_LUA: tenants live in different hash slots (Cluster-safe)."""
    by_tenant: dict[str, tuple[list[str], list[Any]]] = {}
    for a in events:
        keys, argv = by_tenant.setdefault(a.tenant, ([deleted_marker(a.tenant)], []))
        keys += (K.event_key(a.tenant, a.event_id), K.subject_index(a.tenant, a.subject),
                 K.type_index(a.tenant, a.event_type), K.time_index(a.tenant))
        argv += (a.event_id, a.event_time_ms, store_document(a))
    return by_tenant


class StoreWriter:
    """Writes a batch: per tenant one atomic script call, all of them in one round trip.

    Idempotent: writing an event again sets the same document and scores.
    """

    def __init__(self, redis_url: str) -> None:
        self._client = aioredis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)

    async def write_batch(self, events: Iterable[Accepted]) -> int:
        """Write the events; returns how many were written. Raises ``TenantsDeleted`` (after
        writing every other tenant's events) when a tenant of the batch is deleted."""
        calls = write_calls(events)
        if not calls:
            return 0
        try:
            pipe = self._client.pipeline(transaction=False)
            for keys, argv in calls.values():
                # EVAL rather than EVALSHA: no NOSCRIPT after a Redis restart; Redis caches the compiled script.
                pipe.eval(WRITE_EVENTS_LUA, len(keys), *keys, *argv)
            replies = await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            raise SinkUnavailable(f"Redis write failed: {type(exc).__name__}") from None
        refused = frozenset(t for t, r in zip(calls, replies) if int(r) < 0)
        if refused:
            raise TenantsDeleted(refused)
        return sum(int(r) for r in replies)

    async def add_stats(self, counts: dict[str, dict[str, int]]) -> None:
        """Per-tenant counters for the compliance report (``k:{t}:stats``); at least once, like delivery."""
        if not counts:
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for tenant, fields in counts.items():
                for name, n in fields.items():
                    pipe.hincrby(stats_key(tenant), name, n)
            await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            raise SinkUnavailable(f"Redis write failed: {type(exc).__name__}") from None

    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except (redis.RedisError, OSError):
            return False

    async def close(self) -> None:
        await self._client.aclose()


class StoreReader:
    """Queries of one tenant's keyspace. Every method takes the tenant explicitly."""

    def __init__(self, client: redis.Redis) -> None:
        self._r = client

    @classmethod
    def from_url(cls, url: str) -> "StoreReader":
        return cls(redis.Redis.from_url(url, decode_responses=True, socket_timeout=5))

    def get(self, tenant: str, event_id: str) -> dict[str, Any] | None:
        raw = self._r.get(K.event_key(tenant, event_id))
        return json.loads(raw) if raw else None

    def _load(self, tenant: str, ids: list[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        docs = self._r.mget([K.event_key(tenant, i) for i in ids])
        return [json.loads(d) for d in docs if d]

    def by_subject(self, tenant: str, subject: str, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        ids = self._r.zrange(K.subject_index(tenant, subject), offset, offset + limit - 1)
        return self._load(tenant, ids)

    def by_type(self, tenant: str, event_type: str, start_ms: int | None = None, end_ms: int | None = None,
                limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        ids = self._r.zrangebyscore(K.type_index(tenant, event_type),
                                    "-inf" if start_ms is None else start_ms,
                                    "+inf" if end_ms is None else end_ms,
                                    start=offset, num=limit)
        return self._load(tenant, ids)

    def by_time(self, tenant: str, start_ms: int | None = None, end_ms: int | None = None,
                limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        ids = self._r.zrangebyscore(K.time_index(tenant), "-inf" if start_ms is None else start_ms,
                                    "+inf" if end_ms is None else end_ms, start=offset, num=limit)
        return self._load(tenant, ids)

    def count(self, tenant: str, event_type: str | None = None) -> int:
        key = K.type_index(tenant, event_type) if event_type else K.time_index(tenant)
        return int(self._r.zcard(key))
