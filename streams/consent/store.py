"""Consent state, applied request offsets and receipts in Redis, in the pipeline-only keyspace.

Why Redis and not a Faust table (DESIGN suggested tables): every worker reads
the same state, so a rebalance can never leave a worker with a stale or
half-recovered table (faust-streaming #171, #651), the ingest path reads a
batch's consent in one MGET next to the subject keys, and erasure is a DEL.
State is keyed by the subject's pseudonym, never its id, so the suppression
list of an erased subject holds no identifier.

Keys (``k:{<tenant>}:`` like the key store; tenant ACL users never get them):
- ``k:{t}:consent:<pseudonym>``  SubjectState JSON
- ``k:{t}:receipt:<request id>`` receipt JSON
- ``k:{t}:requests``             ZSET request id -> filed time (for reports)
- ``k:{t}:inflight``             ZSET batch id -> lease end: batches between store and topic write
                                  (``streams.erasure.fence``)
- ``privacy:applied:<topic>:<partition>`` next offset of privacy.requests applied
"""

from __future__ import annotations

import json
from typing import Any, Iterable

import redis

from streams.consent.state import SubjectState
from streams.keyspace import applied_key, consent_key, receipt_key, requests_index




class ConsentStore:
    def __init__(self, client: redis.Redis) -> None:
        self._r = client

    def states(self, tenant: str, pseudonyms: Iterable[str]) -> dict[str, SubjectState]:
        ps = list(pseudonyms)
        if not ps:
            return {}
        raw = self._r.mget([consent_key(tenant, p) for p in ps])
        return {p: SubjectState.from_json(v) for p, v in zip(ps, raw)}

    def state(self, tenant: str, pseudonym: str) -> SubjectState:
        return SubjectState.from_json(self._r.get(consent_key(tenant, pseudonym)))

    def put_state(self, tenant: str, pseudonym: str, state: SubjectState) -> None:
        self._r.set(consent_key(tenant, pseudonym), state.to_json())

    def applied(self, topic: str, partitions: Iterable[int]) -> dict[int, int]:
        ps = list(partitions)
        raw = self._r.mget([applied_key(topic, p) for p in ps]) if ps else []
        return {p: int(v) if v is not None else 0 for p, v in zip(ps, raw)}

    def mark_applied(self, topic: str, partition: int, next_offset: int) -> None:
        # Only ever forward: a replay after a crash must not move it back.
        self._r.eval("local c = tonumber(redis.call('GET', KEYS[1]) or '0') "
                     "if tonumber(ARGV[1]) > c then redis.call('SET', KEYS[1], ARGV[1]) end return 1",
                     1, applied_key(topic, partition), next_offset)

    def receipt(self, tenant: str, request_id: str) -> dict[str, Any] | None:
        raw = self._r.get(receipt_key(tenant, request_id))
        return json.loads(raw) if raw else None

    def put_receipt(self, tenant: str, receipt: dict[str, Any]) -> None:
        pipe = self._r.pipeline(transaction=True)
        pipe.set(receipt_key(tenant, receipt["request_id"]), json.dumps(receipt, separators=(",", ":")))
        pipe.zadd(requests_index(tenant), {receipt["request_id"]: receipt["filed_at_ms"]})
        pipe.execute()

    def receipts(self, tenant: str) -> list[dict[str, Any]]:
        ids = self._r.zrange(requests_index(tenant), 0, -1)
        if not ids:
            return []
        docs = self._r.mget([receipt_key(tenant, i.decode() if isinstance(i, bytes) else i) for i in ids])
        return [json.loads(d) for d in docs if d]
