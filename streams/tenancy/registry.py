"""The onboarded tenants and their settings, in Redis (pipeline-only keys, ``tenancy:``).

The control plane (``streams tenants``, the operator API) writes it; workers read it
every few seconds (``TenantDirectory``), so a tenant onboarded at run time is served
without a restart. ``STREAMS_TENANTS`` still names tenants that exist by configuration
(the demo's, the tests'); the two sets are merged.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Iterator, Mapping

import redis

from streams.keyspace import DELETED_KEY, RECEIPTS_KEY, TENANTS_KEY, deleted_marker
from streams.tenancy.names import validate_tenant_name

REGIMES = ("opt_out", "opt_in")


@dataclass(frozen=True)
class TenantRecord:
    name: str
    regime: str
    created_at_ms: int
    kafka_user: str
    redis_user: str
    status: str = "active"  # "deleting" while a delete runs (events then go to the DLQ as unknown_tenant)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, raw: bytes | str) -> "TenantRecord":
        d = json.loads(raw)
        return cls(**{k: d[k] for k in ("name", "regime", "created_at_ms", "kafka_user", "redis_user", "status")})


def principal_names(tenant: str) -> tuple[str, str]:
    """(Kafka SCRAM user, Redis ACL user) of a tenant's consumers."""
    return f"tenant-{tenant}", f"tenant-{tenant}"


def producer_principal(tenant: str) -> str:
    """The Kafka SCRAM user of a tenant's producers. Its own principal (not the consumer's):
    a producer may write the tenant's raw topic and read nothing; a consumer the reverse.
    ``producer-`` cannot collide with ``tenant-<name>`` of any tenant name."""
    return f"producer-{tenant}"


class TenantRegistry:
    def __init__(self, client: redis.Redis) -> None:
        self._r = client

    def get(self, name: str) -> TenantRecord | None:
        raw = self._r.hget(TENANTS_KEY, validate_tenant_name(name))
        return None if raw is None else TenantRecord.from_json(raw)

    def all(self) -> list[TenantRecord]:
        return sorted((TenantRecord.from_json(v) for v in self._r.hvals(TENANTS_KEY)), key=lambda r: r.name)

    def put(self, record: TenantRecord) -> None:
        self._r.hset(TENANTS_KEY, record.name, record.to_json())

    def remove(self, name: str) -> None:
        self._r.hdel(TENANTS_KEY, name)

    def mark_deleted(self, name: str) -> None:
        """From now on the tenant is deleted, even if configuration names it: workers drop it from
        their directory (``DELETED_KEY``), and the store and key store refuse to write anything of it
        (``deleted_marker``, in the tenant's own hash slot, checked atomically by their scripts)."""
        self._r.sadd(DELETED_KEY, validate_tenant_name(name))
        self._r.set(deleted_marker(name), "1")

    def unmark_deleted(self, name: str) -> None:
        """A tenant created again (``tenants create``) is served again."""
        self._r.srem(DELETED_KEY, validate_tenant_name(name))
        self._r.delete(deleted_marker(name))

    def deleted(self) -> frozenset[str]:
        return frozenset(v.decode() if isinstance(v, bytes) else v for v in self._r.smembers(DELETED_KEY))

    def put_receipt(self, receipt: dict[str, Any]) -> None:
        self._r.hset(RECEIPTS_KEY, receipt["receipt_id"], json.dumps(receipt, separators=(",", ":")))

    def receipt(self, receipt_id: str) -> dict[str, Any] | None:
        raw = self._r.hget(RECEIPTS_KEY, receipt_id)
        return None if raw is None else json.loads(raw)


class TenantDirectory:
    """What a worker knows about tenants: configured ones plus the registry's active ones,
    re-read at most every ``ttl`` seconds. Behaves as a set of names (``in``, iteration)."""

    def __init__(self, configured: Iterable[str], regimes: dict[str, str], client: redis.Redis | None,
                 ttl: float = 2.0, auto_refresh: bool = True) -> None:
        # auto_refresh=False: the owner calls refresh() (the worker, from a timer in a thread, so
        # a slow Redis never blocks the event loop inside a membership test).
        self._auto = auto_refresh
        self._configured = frozenset(configured)
        self._configured_regimes = dict(regimes)
        self._registry = TenantRegistry(client) if client is not None else None
        self._ttl = ttl
        self._lock = threading.Lock()
        self._loaded_at = float("-inf")
        self._names: frozenset[str] = self._configured
        self._regimes: dict[str, str] = dict(regimes)

    def refresh(self, force: bool = False) -> None:
        if self._registry is None or (not force and time.monotonic() - self._loaded_at < self._ttl):
            return
        with self._lock:
            try:
                records = self._registry.all()
                deleted = self._registry.deleted()
            except redis.RedisError:
                return  # keep the last known set; the store being down holds the pipeline back anyway
            active = {r.name: r for r in records if r.status == "active" and r.name not in deleted}
            self._names = (self._configured - deleted) | frozenset(active)
            self._regimes = {**{n: r.regime for n, r in active.items()}, **self._configured_regimes}
            self._loaded_at = time.monotonic()

    def _maybe_refresh(self) -> None:
        if self._auto:
            self.refresh()

    def __contains__(self, name: object) -> bool:
        self._maybe_refresh()
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        self._maybe_refresh()
        return iter(sorted(self._names))

    def __len__(self) -> int:
        self._maybe_refresh()
        return len(self._names)

    def regime_of(self, name: str) -> str:
        self._maybe_refresh()
        return self._regimes.get(name, "opt_out")

    def regimes(self) -> "RegimeView":
        return RegimeView(self)


class RegimeView(Mapping[str, str]):
    """tenant -> regime, live from a directory (what the consent gate reads per batch)."""

    def __init__(self, directory: TenantDirectory) -> None:
        self._d = directory

    def __getitem__(self, name: str) -> str:
        if name not in self._d:
            raise KeyError(name)
        return self._d.regime_of(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)
