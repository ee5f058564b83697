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
from streams.sinks.exceptions import SinkUnavailable


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


class StoreWriter:
    """Writes a batch in one MULTI/EXEC: either all of a batch's events and indexes land, or none."""

    def __init__(self, redis_url: str) -> None:
        self._client = aioredis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)

    async def write_batch(self, events: Iterable[Accepted]) -> int:
        events = list(events)
        if not events:
            return 0
        pipe = self._client.pipeline(transaction=True)
        for a in events:
            pipe.set(K.event_key(a.tenant, a.event_id), store_document(a))
            member = {a.event_id: a.event_time_ms}
            pipe.zadd(K.subject_index(a.tenant, a.subject), member)
            pipe.zadd(K.type_index(a.tenant, a.event_type), member)
            pipe.zadd(K.time_index(a.tenant), member)
        try:
            await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            raise SinkUnavailable(f"Redis write failed: {type(exc).__name__}") from None
        return len(events)

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
