"""The DLQ key: the HMAC key behind the DLQ's fingerprints, held in the key store and rotated on a schedule.

A DLQ record names its payload, record key and event id only by a keyed
fingerprint, ``v<n>:`` + the first 32 hex characters of HMAC-SHA256(DLQ key
v<n>, purpose NUL tenant NUL bytes). Equal inputs of one tenant give equal
fingerprints under one key version (de-duplication; an operator holding a
record can match it with ``streams dlq --payload FILE``), but without the key
nobody can confirm a guess of a short payload, and the tenant in the message
keeps equal payloads of two tenants unlinkable.

Redis layout (pipeline-only keyspace, never granted to a tenant's ACL user):

======================  ======================================================
``k:dlq:<topic>:keys``  HASH ``current`` -> ``"<n>"``; ``v<n>`` -> base64 of key
                        n wrapped by the master key (aad ``dlq-key/<topic>/v<n>``);
                        ``t<n>`` -> its creation time, epoch ms
======================  ======================================================

One keyring per DLQ topic (``STREAMS_DLQ_TOPIC``): the key belongs to the records it
fingerprints.

Rotation schedule: a key version is used for ``rotate_ms`` (7 days) and then
replaced by the next one, by whichever worker first needs a key after that
(an atomic script, so racing workers agree on one version). A version is
destroyed once ``retain_ms`` (the DLQ topic's retention, 30 days) has passed
since its successor took over: no retained DLQ record uses it any more, and
fingerprints made with it can no longer be matched by anyone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
import time
from typing import Callable, Protocol

import redis

from streams.keyspace import dlq_keys_key
from streams.privacy.keys import KeyProvider

#: The keyring's Redis key (``streams.keyspace.dlq_keys_key``), under its old name.
redis_key = dlq_keys_key


KEY_BYTES = 32
ROTATE_MS = 7 * 24 * 3600 * 1000
RETAIN_MS = 30 * 24 * 3600 * 1000  # the DLQ topic's retention (streams.ops.topics)
_RECHECK_S = 60.0

# ARGV: expected current version ("0": none yet), new wrapped key, now ms. Installs version
# expected+1 only if the current version is still the expected one; returns the current version.
_ROTATE_LUA = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'current') or '0')
if cur == tonumber(ARGV[1]) then
  cur = cur + 1
  redis.call('HSET', KEYS[1], 'v' .. cur, ARGV[2], 't' .. cur, ARGV[3], 'current', tostring(cur))
end
return cur
"""


def _aad(topic: str, version: int) -> bytes:
    return f"dlq-key/{topic}/v{version}".encode()


class Fingerprinter(Protocol):
    def fingerprint(self, purpose: str, tenant: str | None, data: bytes) -> str: ...

    def fingerprints(self, purpose: str, tenant: str | None, data: bytes) -> list[str]: ...


def _mac(key: bytes, version: int, purpose: str, tenant: str | None, data: bytes) -> str:
    msg = purpose.encode() + b"\0" + (tenant or "").encode() + b"\0" + data
    return f"v{version}:" + hmac.new(key, msg, hashlib.sha256).hexdigest()[:32]


class EphemeralDlqKey:
    """One random key held in this process only (unit tests, tools without Redis): never unkeyed."""

    def __init__(self) -> None:
        self._key = os.urandom(KEY_BYTES)

    def __repr__(self) -> str:
        return "EphemeralDlqKey(<key hidden>)"

    def fingerprint(self, purpose: str, tenant: str | None, data: bytes) -> str:
        return _mac(self._key, 0, purpose, tenant, data)

    def fingerprints(self, purpose: str, tenant: str | None, data: bytes) -> list[str]:
        return [self.fingerprint(purpose, tenant, data)]


class DlqKeyring:
    """The DLQ key's versions in Redis, wrapped by the key provider; rotates itself on schedule."""

    def __init__(self, client: redis.Redis, provider: KeyProvider, topic: str = "events.dlq",
                 rotate_ms: int = ROTATE_MS, retain_ms: int = RETAIN_MS,
                 clock: Callable[[], float] = time.time) -> None:
        self.topic = topic
        self._redis_key = redis_key(topic)
        self._r = client
        self._provider = provider
        self.rotate_ms = rotate_ms
        self.retain_ms = retain_ms
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[int, bytes] = {}
        self._current: tuple[int, int] | None = None  # (version, created ms)
        self._checked = 0.0
        self._rotate = client.register_script(_ROTATE_LUA)

    def __repr__(self) -> str:
        return f"DlqKeyring(versions_cached={len(self._keys)})"

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _load(self) -> dict[bytes, bytes]:
        return self._r.hgetall(self._redis_key)

    def _unwrap(self, version: int, wrapped_b64: bytes) -> bytes:
        key = self._keys.get(version)
        if key is None:
            key = self._keys[version] = self._provider.unwrap(base64.b64decode(wrapped_b64), _aad(self.topic, version))
        return key

    def current(self) -> tuple[int, bytes]:
        """The version to fingerprint with now, rotating (and pruning) when its time is up."""
        with self._lock:
            now = self._now_ms()
            if (self._current is not None and self._clock() - self._checked < _RECHECK_S
                    and now - self._current[1] < self.rotate_ms):
                return self._current[0], self._keys[self._current[0]]
            h = self._load()
            cur = int(h.get(b"current", b"0"))
            if cur == 0 or now - int(h.get(b"t%d" % cur, b"0")) >= self.rotate_ms:
                wrapped = base64.b64encode(self._provider.wrap(os.urandom(KEY_BYTES), _aad(self.topic, cur + 1)))
                self._rotate(keys=[self._redis_key], args=[cur, wrapped, now])
                h = self._load()
                cur = int(h[b"current"])
                self._prune(h, cur, now)
            key = self._unwrap(cur, h[b"v%d" % cur])
            self._current = (cur, int(h[b"t%d" % cur]))
            self._checked = self._clock()
            return cur, key

    def _prune(self, h: dict[bytes, bytes], cur: int, now: int) -> None:
        """Destroy versions whose successor took over more than ``retain_ms`` ago."""
        gone = []
        for v in range(1, cur):
            succ = h.get(b"t%d" % (v + 1))
            if b"v%d" % v in h and succ is not None and now - int(succ) >= self.retain_ms:
                gone += [b"v%d" % v, b"t%d" % v]
                self._keys.pop(v, None)
        if gone:
            self._r.hdel(self._redis_key, *gone)

    def live(self) -> list[tuple[int, bytes]]:
        """Every version not yet destroyed, newest first (to match records made under older ones)."""
        self.current()
        h = self._load()
        out = []
        for name, value in h.items():
            if name.startswith(b"v"):
                v = int(name[1:])
                out.append((v, self._unwrap(v, value)))
        return sorted(out, reverse=True)

    def rotate(self) -> int:
        """Start a new version now (operator command / tests); returns it."""
        with self._lock:
            h = self._load()
            cur = int(h.get(b"current", b"0"))
            wrapped = base64.b64encode(self._provider.wrap(os.urandom(KEY_BYTES), _aad(self.topic, cur + 1)))
            new = int(self._rotate(keys=[self._redis_key], args=[cur, wrapped, self._now_ms()]))
            self._current = None
            self._prune(self._load(), new, self._now_ms())
            return new

    def fingerprint(self, purpose: str, tenant: str | None, data: bytes) -> str:
        version, key = self.current()
        return _mac(key, version, purpose, tenant, data)

    def fingerprints(self, purpose: str, tenant: str | None, data: bytes) -> list[str]:
        return [_mac(key, v, purpose, tenant, data) for v, key in self.live()]
