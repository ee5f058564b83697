"""Parked privacy requests: a request stopped by a fault of its tenant's own data waits apart, so
the other tenants' requests and events go on.

Why: the reader carries requests out in order, and every ingest batch waits until they are
carried out (``streams.consent.gate``). A request that fails because its tenant's own records are
damaged (a ``TenantFault``: the tenant's pseudonym secret no longer unwraps, say, while the master
key unwraps the tenant's check record) would fail on every retry until an operator repairs the
tenant, and every tenant would wait with it. Dropping it instead would lose an erasure.

So the reader parks it: the request's bytes go to the tenant's list ``k:{t}:parked`` (oldest
first, each wrapped by the master key, aad ``parked-request/<t>``: a request names its subject),
the tenant joins ``privacy:parked-tenants``, and only then does the reader's offset move past it
(nothing is lost if the worker dies in between: the request is read again and parked again, or
carried out). While a tenant has parked requests:

* its later requests are parked behind them, so a tenant's requests keep their order;
* its events are set aside as ``key_error`` (``streams.consent.gate``): a parked opt-out or erasure
  must hold before any event of its subject is delivered again;
* the reader retries the oldest every ``RETRY_S`` (``PrivacyRequestReader.retry_parked``), then the
  next, until none is left: once an operator has repaired the tenant's records (restored from a
  backup), the tenant goes on by itself.

The receipt of a parked request says ``parked`` with the reason; ``streams_privacy_requests_parked``
(a gauge) and the log say which tenant to look at.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass

import redis

from streams.keyspace import PARKED_TENANTS_KEY, parked_requests_key
from streams.privacy.exceptions import KeyIntegrityError
from streams.privacy.keys import KeyProvider
from streams.privacy.keys.check import MasterKeyCheck

RETRY_S = 5.0  # how often a worker retries a parked tenant's oldest request

# Removes the oldest entry only if it is still the one just carried out (two workers may retry the
# same tenant at once: the second finds another head and leaves it), and the tenant from the set
# once its list is empty, in one step, so a request parked meanwhile is never left unlisted.
_DONE_LUA = """
if redis.call('LINDEX', KEYS[1], 0) == ARGV[1] then redis.call('LPOP', KEYS[1]) end
local left = redis.call('LLEN', KEYS[1])
if left == 0 then redis.call('SREM', KEYS[2], ARGV[2]) end
return left
"""


# Unlists a tenant whose list is empty (a crash between a pop and the SREM), in one step: a request
# parked meanwhile keeps its tenant listed. Never deletes a list: only a tenant's deletion does.
_FORGET_EMPTY_LUA = """
if redis.call('LLEN', KEYS[1]) == 0 then return redis.call('SREM', KEYS[2], ARGV[1]) end
return 0
"""


def _aad(tenant: str) -> bytes:
    return f"parked-request/{tenant}".encode()


@dataclass(frozen=True)
class Parked:
    """One parked request: its record value, when and why it was parked, and its stored entry."""
    value: bytes
    parked_at_ms: int
    reason: str
    entry: bytes


class ParkedRequests:
    """The parked requests of every tenant, in Redis (shared by the workers)."""

    def __init__(self, client: redis.Redis, provider: KeyProvider) -> None:
        self._r = client
        self._provider = provider
        self._done = client.register_script(_DONE_LUA)
        self._forget_empty = client.register_script(_FORGET_EMPTY_LUA)
        self._check = MasterKeyCheck(client, provider)

    def tenants(self) -> set[str]:
        """The tenants with parked requests (one SMEMBERS)."""
        return {t.decode() if isinstance(t, bytes) else t for t in self._r.smembers(PARKED_TENANTS_KEY)}

    def park(self, tenant: str, value: bytes, reason: str) -> int:
        """Append a request (its record value) to the tenant's list; returns how many are parked.
        ``reason`` is shown to operators: it must name no subject."""
        wrapped = base64.b64encode(self._provider.wrap(value, _aad(tenant))).decode()
        entry = json.dumps({"request": wrapped, "parked_at_ms": int(time.time() * 1000), "reason": reason},
                           separators=(",", ":"))
        pipe = self._r.pipeline(transaction=True)
        pipe.rpush(parked_requests_key(tenant), entry)
        pipe.sadd(PARKED_TENANTS_KEY, tenant)
        return int(pipe.execute()[0])

    def oldest(self, tenant: str) -> Parked | None:
        """The tenant's oldest parked request (None: none left)."""
        entry = self._r.lindex(parked_requests_key(tenant), 0)
        if entry is None:
            return None
        doc = json.loads(entry)
        try:
            value = self._provider.unwrap(base64.b64decode(doc["request"], validate=True), _aad(tenant))
        except (KeyIntegrityError, binascii.Error, ValueError):
            # Damaged (the tenant's fault: it stays parked) or the master key is wrong (raised: held back).
            raise self._check.blame(tenant, "a parked privacy request") from None
        return Parked(value, int(doc["parked_at_ms"]), str(doc["reason"]), entry)

    def is_parked(self, tenant: str) -> bool:
        return bool(self._r.sismember(PARKED_TENANTS_KEY, tenant))

    def done(self, tenant: str, parked: Parked) -> int:
        """``parked`` was carried out: remove it; returns how many of the tenant's are left."""
        return int(self._done(keys=[parked_requests_key(tenant), PARKED_TENANTS_KEY], args=[parked.entry, tenant]))

    def count(self, tenant: str) -> int:
        return int(self._r.llen(parked_requests_key(tenant)))

    def forget_if_empty(self, tenant: str) -> bool:
        """Unlist the tenant if it has no parked request left; True if it was unlisted."""
        return bool(self._forget_empty(keys=[parked_requests_key(tenant), PARKED_TENANTS_KEY], args=[tenant]))
