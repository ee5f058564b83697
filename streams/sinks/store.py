"""The queryable store in Redis: clean events by id, indexed by subject, type and time.

``StoreSink`` is the store as a ``Sink`` (``streams.sinks.base``), and the first one: the subject
index an erasure reads to find every copy. ``StoreWriter`` is its async batch writer (the worker's
event loop); ``StoreReader`` is the synchronous query side used by the CLI, the tests and the API.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from typing import Any, Callable, Iterable

import redis
import redis.asyncio as aioredis

from streams import keyspace as K
from streams.connections import Purpose, redis_client
from streams.erasure.fence import INFLIGHT_LEASE_MS, LEAVE_LUA
from streams.keyspace import consent_key, deleted_marker, inflight_key, stats_key, subject_key_name
from streams.records import Accepted
from streams.settings import Settings
from streams.sinks.base import Batch, Sink, SubjectErasure, SubjectIndex, Written
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


# One script call per tenant and batch instead of four commands per event: the
# script runs atomically (an event and its index entries land together), and
# the worker parses one reply instead of thousands (profiled: the MULTI/EXEC
# version spent more time in redis-py's reply parsing than in Redis).
# KEYS: the tenant's deleted marker, the tenant's in-flight ZSET, then per event its document,
# subject-index, type-index and time-index keys, its subject's consent state and subject key.
# ARGV: the batch id ('' = do not register), the lease (ms), then per event: id, event time (ms),
# document.
# A deleted tenant (marker set) gets nothing written, atomically: a batch that was validated
# before the workers learnt of the deletion cannot bring its data back after the purge.
# A subject whose consent state says erased (or suppressed) gets nothing written either, in the
# same atomic call (streams.erasure.fence: an erasure applied by another worker after this
# batch's gate); its subject key is deleted too, since the batch may have created it again after
# the erasure destroyed it. If anything was written the batch is registered as in flight (until
# its topic write is acknowledged), so an erasure whose marker comes later waits for it.
# Reply: {-1} (tenant deleted) or {written, indexes (0-based) of the refused events...}.
WRITE_EVENTS_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {-1} end
local n = (#KEYS - 2) / 6
local erased = {}
local out = {0}
for i = 0, n - 1 do
  local k = 2 + i * 6
  local ck = KEYS[k + 5]
  local gone = erased[ck]
  if gone == nil then
    gone = false
    local raw = redis.call('GET', ck)
    if raw then
      local ok, st = pcall(cjson.decode, raw)
      gone = ok and type(st) == 'table' and (st['erased'] == true or st['suppressed'] == true)
    end
    erased[ck] = gone
    if gone then redis.call('DEL', KEYS[k + 6]) end
  end
  if gone then
    out[#out + 1] = i
  else
    local a = 2 + i * 3
    local id, score = ARGV[a + 1], ARGV[a + 2]
    redis.call('SET', KEYS[k + 1], ARGV[a + 3])
    redis.call('ZADD', KEYS[k + 2], score, id)
    redis.call('ZADD', KEYS[k + 3], score, id)
    redis.call('ZADD', KEYS[k + 4], score, id)
    out[1] = out[1] + 1
  end
end
if out[1] > 0 and ARGV[1] ~= '' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
end
return out
"""


# The counters of a tenant, unless it is deleted (its marker, same hash slot, same call): a batch that
# counted events of a tenant deleted meanwhile must not bring a key of it back after the receipt.
STATS_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 1, #ARGV, 2 do redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1]) end
return 1
"""


# Deletes a subject's documents and every index entry pointing at them, atomically.
PURGE_SUBJECT_LUA = """
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
local n = 0
for _, id in ipairs(ids) do
  local evk = ARGV[1] .. 'ev:' .. id
  local doc = redis.call('GET', evk)
  if doc then
    local ok, d = pcall(cjson.decode, doc)
    if ok and type(d) == 'table' and d['event_type'] then
      redis.call('ZREM', ARGV[1] .. 'type:' .. d['event_type'], id)
    end
    redis.call('DEL', evk)
    n = n + 1
  end
  redis.call('ZREM', ARGV[1] .. 'time', id)
end
redis.call('DEL', KEYS[1])
return n
"""


def _no_consent_key(tenant: str, subject: str) -> str:
    # No consent state to check (a writer without pseudonyms: tools and tests): a key in the
    # tenant's slot that is never written (pseudonyms are never empty), so nothing is refused.
    return consent_key(tenant, "")


def write_calls(events: Iterable[Accepted], batch_id: str = "", lease_ms: int = INFLIGHT_LEASE_MS,
                consent_of: Callable[[str, str], str] = _no_consent_key
                ) -> dict[str, tuple[list[str], list[Any], list[Accepted]]]:
    """{tenant: (KEYS, ARGV, events)} of WRITE_EVENTS_LUA: tenants live in different hash slots
    (Cluster-safe). ``consent_of(tenant, subject)``: the subject's consent-state key."""
    by_tenant: dict[str, tuple[list[str], list[Any], list[Accepted]]] = {}
    seen: dict[tuple[str, str], str] = {}
    for a in events:
        keys, argv, evs = by_tenant.setdefault(
            a.tenant, ([deleted_marker(a.tenant), inflight_key(a.tenant)], [batch_id, lease_ms], []))
        ck = seen.get((a.tenant, a.subject))
        if ck is None:
            ck = seen[(a.tenant, a.subject)] = consent_of(a.tenant, a.subject)
        keys += (K.event_key(a.tenant, a.event_id), K.subject_index(a.tenant, a.subject),
                 K.type_index(a.tenant, a.event_type), K.time_index(a.tenant), ck,
                 subject_key_name(a.tenant, a.subject))
        argv += (a.event_id, a.event_time_ms, store_document(a))
        evs.append(a)
    return by_tenant


class StoreWrite(Written):
    """What a batch's store write did (``Written``: written, refused, deleted, registered)."""


class StoreWriter:
    """Writes a batch: per tenant one atomic script call, all of them in one round trip.

    Idempotent: writing an event again sets the same document and scores. ``client`` is an asyncio
    client answering ``bytes`` (``streams.connections.async_redis_client``); ``close`` closes it.
    ``pseudonyms(tenant, subject)`` names the consent state the script checks (without it no
    subject is refused: tools and tests).
    """

    def __init__(self, client: aioredis.Redis, pseudonyms: Callable[[str, str], str] | None = None,
                 lease_ms: int = INFLIGHT_LEASE_MS) -> None:
        self._client = client
        self._pseudonyms = pseudonyms
        self.lease_ms = lease_ms

    def _consent_of(self, tenant: str, subject: str) -> str:
        if self._pseudonyms is None:
            return _no_consent_key(tenant, subject)
        return consent_key(tenant, self._pseudonyms(tenant, subject))

    async def write_batch(self, events: Iterable[Accepted], batch_id: str = "") -> StoreWrite:
        """Write the events of tenants not deleted and subjects not erased. With ``batch_id`` the
        batch is registered as in flight for each tenant it wrote to; ``leave`` (in ``add_stats``)
        ends that after the topic write."""
        calls = write_calls(events, batch_id, self.lease_ms, self._consent_of)
        if not calls:
            return StoreWrite()
        try:
            pipe = self._client.pipeline(transaction=False)
            for keys, argv, _ in calls.values():
                # EVAL rather than EVALSHA: no NOSCRIPT after a Redis restart; Redis caches the compiled script.
                pipe.eval(WRITE_EVENTS_LUA, len(keys), *keys, *argv)
            replies = await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            raise SinkUnavailable(f"Redis write failed: {type(exc).__name__}") from None
        written, refused, deleted, registered = 0, [], set(), set()
        for (tenant, (_, _, evs)), reply in zip(calls.items(), replies):
            if int(reply[0]) < 0:
                deleted.add(tenant)
                continue
            written += int(reply[0])
            refused += [evs[int(i)] for i in reply[1:]]
            if int(reply[0]) > 0 and batch_id:
                registered.add(tenant)
        return StoreWrite(written, tuple(refused), frozenset(deleted), frozenset(registered))

    async def add_stats(self, counts: dict[str, dict[str, int]],
                        leave: tuple[str, Iterable[str]] | None = None) -> frozenset[str]:
        """Per-tenant counters for the compliance report (``k:{t}:stats``); at least once, like delivery.

        ``leave=(batch id, tenants)``: in the same round trip, the batch leaves those tenants'
        in-flight sets (its topic write is acknowledged). Returns the tenants where its lease had
        lapsed: an erasure may have stopped waiting for it (the caller checks its subjects)."""
        tenants = sorted(leave[1]) if leave else []
        if not counts and not tenants:
            return frozenset()
        try:
            pipe = self._client.pipeline(transaction=False)
            for tenant in tenants:
                pipe.eval(LEAVE_LUA, 1, inflight_key(tenant), leave[0])
            for tenant, fields in counts.items():
                if fields:
                    args = [x for name, n in fields.items() for x in (name, n)]
                    pipe.eval(STATS_LUA, 2, deleted_marker(tenant), stats_key(tenant), *args)
            replies = await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            raise SinkUnavailable(f"Redis write failed: {type(exc).__name__}") from None
        return frozenset(t for t, r in zip(tenants, replies) if not int(r))

    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except (redis.RedisError, OSError):
            return False

    async def close(self) -> None:
        await self._client.aclose()


class StoreSink(Sink, SubjectIndex):
    """The store as a sink, and the subject index: first in the sink list (``streams.sinks.base``).

    ``writer``: the async batch writer (the worker; None where only erasures and deletions run).
    ``client``: a blocking client for erasures and tenant deletion (None in the worker's unit tests).
    """

    name = "store"
    erase_step = "store"
    drop_step = "store"

    def __init__(self, writer: StoreWriter | None, client: redis.Redis | None = None) -> None:
        self.writer = writer
        self.client = client

    async def write(self, batch: Batch) -> StoreWrite:
        return await self.writer.write_batch(batch.accepted, batch.batch_id)

    def subject_event_ids(self, tenant: str, subject: str) -> list[str]:
        ids = self.client.zrange(K.subject_index(tenant, subject), 0, -1)
        return sorted(x.decode() if isinstance(x, bytes) else x for x in ids)

    def erase_subject(self, erasure: SubjectErasure) -> dict[str, Any]:
        deleted = self.client.eval(PURGE_SUBJECT_LUA, 1, K.subject_index(erasure.tenant, erasure.subject),
                                   K.store_prefix(erasure.tenant))
        return {"deleted_events": int(deleted)}

    def drop_tenant(self, tenant: str) -> dict[str, Any]:
        """Every key of the tenant's keyspace (documents and indexes), unlinked in chunks."""
        n = 0
        batch: list[bytes] = []
        for key in self.client.scan_iter(match=K.store_pattern(tenant), count=1000):
            batch.append(key)
            if len(batch) >= 500:
                n += int(self.client.unlink(*batch))
                batch = []
        if batch:
            n += int(self.client.unlink(*batch))
        return {"deleted_keys": n}

    async def close(self) -> None:
        if self.writer is not None:
            await self.writer.close()


class StoreReader:
    """Queries of one tenant's keyspace. Every method takes the tenant explicitly. ``client`` answers
    ``str`` (``decode_responses=True``): ``from_settings`` makes such a client."""

    def __init__(self, client: redis.Redis) -> None:
        self._r = client

    @classmethod
    def from_settings(cls, settings: Settings, purpose: Purpose = Purpose.CLI) -> "StoreReader":
        """A reader on its own client (``str`` answers), with ``purpose``'s timeouts."""
        return cls(redis_client(settings, purpose, decode_responses=True))

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
