"""``KeyStore``: tenant and subject keys in Redis, wrapped by the provider's master key.

The hierarchy, layout and guarantees are described in the package docstring
(``streams.privacy.keys``).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass
from typing import Iterable

import redis
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from streams.privacy.exceptions import (
    KeyIntegrityError,
    KeyNotFound,
    KeyRotationConflict,
    PrivacyError,
    TenantDeleted,
    TenantKeyDamaged,
)
from streams.keyspace import deleted_marker, pipeline_prefix, subject_key_name, tenant_hash_key
from streams.privacy.keys.check import MasterKeyCheck
from streams.privacy.keys.layout import (
    _NONCE_BYTES,
    SUBJECT_KEY_BYTES,
    TENANT_KEY_BYTES,
    _parse_subject_value,
    _SubjectDamaged,
    _text,
    _VersionGone,
    subject_key_aad,
    tenant_key_aad,
)
from streams.privacy.keys.provider import KeyProvider
from streams.privacy.keys.scripts import (
    _BEGIN_ROTATION_LUA,
    _CREATE_SUBJECT_KEYS_LUA,
    _CURRENT_TENANT_KEY_LUA,
    _PRUNE_LUA,
    _REWRAP_LUA,
)
from streams.tenancy.names import validate_tenant_name

# Subject keys are handled in chunks of this many per MGET / script call: one
# round trip for a worker batch, a bounded time inside Redis for huge inputs.
_CHUNK = 1000
_SCAN_COUNT = 500
_ATTEMPTS = 8


@dataclass(frozen=True)
class RotationReport:
    tenant: str
    old_version: int
    new_version: int
    #: subject keys re-wrapped under the new version
    rewrapped: int
    #: old tenant-key versions deleted at the end
    deleted_versions: int = 0


class KeyStore:
    """Tenant and subject keys in Redis, wrapped by the provider's master key."""

    def __init__(self, redis_client: redis.Redis, provider: KeyProvider) -> None:
        self._r = redis_client
        self._provider = provider
        # (tenant, version) -> (wrapped tenant key, its AEAD). The wrapped bytes let a
        # stale entry (tenant deleted and created again) be recognised and replaced.
        self._tenant_keys: dict[tuple[str, int], tuple[bytes, AESGCM]] = {}
        # Tells a damaged tenant record from a wrong master key when an unwrap fails.
        self._check = MasterKeyCheck(redis_client, provider)
        self._current_script = redis_client.register_script(_CURRENT_TENANT_KEY_LUA)
        self._create_script = redis_client.register_script(_CREATE_SUBJECT_KEYS_LUA)
        self._begin_rotation_script = redis_client.register_script(_BEGIN_ROTATION_LUA)
        self._rewrap_script = redis_client.register_script(_REWRAP_LUA)
        self._prune_script = redis_client.register_script(_PRUNE_LUA)

    def __repr__(self) -> str:
        return f"KeyStore(provider={self._provider!r}, cached_tenant_keys={len(self._tenant_keys)})"

    # ------------------------------------------------------------------ subject keys

    def subject_keys(self, tenant: str, subjects: Iterable[str], create: bool = True) -> dict[str, bytes]:
        """The keys of ``subjects`` (one MGET when all exist); missing ones created, or omitted if not ``create``.

        The result maps each subject (in first-seen order, duplicates once) to its
        ``SUBJECT_KEY_BYTES`` key. A key created concurrently by another worker is
        the one returned here too (SET NX, then the winner is read back).

        Raises ``TenantKeyDamaged`` when the tenant's key records are damaged and the master
        key is good (``MasterKeyCheck``): with ``subjects`` set when only those subjects'
        records are (ask again without them), empty when the tenant key is. Raises
        ``KeyProviderError`` when the master key may be wrong (every tenant's fault).
        """
        validate_tenant_name(tenant)
        wanted = list(dict.fromkeys(subjects))
        for s in wanted:
            if not isinstance(s, str) or not s:
                raise ValueError("subject ids must be non-empty strings")
        result: dict[str, bytes] = {}
        damaged: set[str] = set()
        for i in range(0, len(wanted), _CHUNK):
            chunk = wanted[i:i + _CHUNK]
            values = self._r.mget([subject_key_name(tenant, s) for s in chunk])
            found = {s: v for s, v in zip(chunk, values) if v is not None}
            keys, bad = self._unwrap_values(tenant, found)
            result.update(keys)
            damaged |= bad
            # A damaged record is never replaced by a new key: the tokens made with the old one
            # would silently stop matching (and SET NX would refuse anyway).
            missing = [s for s in chunk if s not in result and s not in bad]
            if missing and create:
                result.update(self._create_subject_keys(tenant, missing))
        if damaged:
            # Subject records that do not unwrap under a tenant key that does: the tenant key is
            # authenticated (the master key unwrapped it), so the damage is those records' own.
            raise TenantKeyDamaged(tenant, f"{len(damaged)} subject key record(s) of tenant {tenant!r} are damaged",
                                   subjects=frozenset(damaged))
        return {s: result[s] for s in wanted if s in result}

    def subject_key(self, tenant: str, subject: str) -> bytes:
        """The subject's key, for detokenizing; ``KeyNotFound`` if it was never created or was destroyed."""
        key = self.subject_keys(tenant, [subject], create=False).get(subject)
        if key is None:
            raise KeyNotFound(f"tenant {tenant!r} has no key for this subject: never created, or destroyed by erasure")
        return key

    def destroy_subject_key(self, tenant: str, subject: str) -> bool:
        """Crypto-shred a subject: delete its key. True if it existed. Effective on every worker at once."""
        validate_tenant_name(tenant)
        return bool(self._r.delete(subject_key_name(tenant, subject)))

    # ------------------------------------------------------------------ tenant keys

    def tenant_key_version(self, tenant: str) -> int | None:
        """The current tenant-key version, or None if the tenant has no key yet."""
        validate_tenant_name(tenant)
        cur = self._r.hget(tenant_hash_key(tenant), "current")
        return None if cur is None else int(_text(cur))

    def ensure_tenant_key(self, tenant: str) -> int:
        """Create the tenant key if there is none (onboarding); returns the current version."""
        validate_tenant_name(tenant)
        return self._current_tenant_key(tenant)[0]

    def rotate_tenant_key(self, tenant: str) -> RotationReport:
        """New tenant-key version, made current; every subject key re-wrapped under it; old versions deleted.

        Subject keys do not change, so old tokens stay detokenizable. A subject key
        destroyed meanwhile stays destroyed (compare-and-set per key). Safe to run
        again after a crash: a new rotation re-wraps whatever is left under any
        older version. ``KeyNotFound`` if the tenant has no key; ``KeyRotationConflict``
        if another rotation of this tenant starts meanwhile (that one finishes the job).
        """
        validate_tenant_name(tenant)
        h = tenant_hash_key(tenant)
        for _ in range(_ATTEMPTS):
            fields = {_text(k): _text(v) for k, v in self._r.hgetall(h).items()}
            if "current" not in fields:
                raise KeyNotFound(f"tenant {tenant!r} has no key to rotate")
            old = int(fields["current"])
            versions = [int(f[1:]) for f in fields if re.fullmatch(r"v[0-9]+", f)]
            new = max(versions + [old]) + 1
            key = os.urandom(TENANT_KEY_BYTES)
            wrapped = self._provider.wrap(key, tenant_key_aad(tenant, new))
            if self._begin_rotation_script(keys=[h], args=[str(old), str(new), base64.b64encode(wrapped)]) == 1:
                self._tenant_keys[(tenant, new)] = (wrapped, AESGCM(key))
                break
        else:
            raise KeyRotationConflict(f"tenant key of {tenant!r} kept changing while a rotation tried to start")

        rewrapped = 0
        cursor = 0
        while True:
            cursor, names = self._r.scan(cursor, match=f"{pipeline_prefix(tenant)}subj:*", count=_SCAN_COUNT)
            if names:
                rewrapped += self._rewrap(tenant, new, names)
            if int(cursor) == 0:
                break
        deleted = int(self._prune_script(keys=[h], args=[str(new)]))
        for cache_key in [k for k in self._tenant_keys if k[0] == tenant and k[1] < new]:
            self._tenant_keys.pop(cache_key, None)
        return RotationReport(tenant, old, new, rewrapped, deleted)

    def destroy_tenant(self, tenant: str) -> int:
        """Delete all of a tenant's key material (``k:{t}:*``); returns the number of Redis keys deleted.

        Stop the tenant's processing first: a worker still creating keys would start a new hierarchy.
        """
        validate_tenant_name(tenant)
        deleted = 0
        cursor = 0
        while True:
            cursor, names = self._r.scan(cursor, match=f"{pipeline_prefix(tenant)}*", count=_SCAN_COUNT)
            if names:
                deleted += int(self._r.delete(*names))
            if int(cursor) == 0:
                break
        for cache_key in [k for k in self._tenant_keys if k[0] == tenant]:
            self._tenant_keys.pop(cache_key, None)
        self._check.forget(tenant)
        return deleted

    # ------------------------------------------------------------------ internals

    def _tenant_aead(self, tenant: str, version: int, wrapped_b64: bytes | str) -> AESGCM:
        try:
            wrapped = base64.b64decode(wrapped_b64, validate=True)
        except (binascii.Error, ValueError):
            raise TenantKeyDamaged(tenant, f"tenant key v{version} of {tenant!r} is malformed") from None
        cached = self._tenant_keys.get((tenant, version))
        if cached is not None and cached[0] == wrapped:
            return cached[1]
        try:
            key = self._provider.unwrap(wrapped, tenant_key_aad(tenant, version))
        except KeyIntegrityError:
            raise self._check.blame(tenant, f"tenant key v{version}") from None
        self._check.ensure(tenant)  # proven for this tenant: a tenant older than the check gets one
        if len(key) != TENANT_KEY_BYTES:
            raise TenantKeyDamaged(tenant, f"tenant key v{version} of {tenant!r} has the wrong length")
        aead = AESGCM(key)
        self._tenant_keys[(tenant, version)] = (wrapped, aead)
        return aead

    def _fetch_tenant_aead(self, tenant: str, version: int) -> AESGCM:
        wrapped_b64 = self._r.hget(tenant_hash_key(tenant), f"v{version}")
        if wrapped_b64 is None:
            raise _VersionGone
        return self._tenant_aead(tenant, version, wrapped_b64)

    def _current_tenant_key(self, tenant: str) -> tuple[int, AESGCM]:
        """The current version and its key; creates version 1 if the tenant has none."""
        h = tenant_hash_key(tenant)
        reply = self._current_script(keys=[h], args=[""])
        if reply is None:
            self._refuse_if_deleted(tenant)
            key = os.urandom(TENANT_KEY_BYTES)
            wrapped = self._provider.wrap(key, tenant_key_aad(tenant, 1))
            reply = self._current_script(keys=[h], args=[base64.b64encode(wrapped)])
            if len(reply) == 2 and int(_text(reply[0])) == 1 and base64.b64decode(reply[1]) == wrapped:
                self._tenant_keys[(tenant, 1)] = (wrapped, AESGCM(key))
                self._check.ensure(tenant, force=True)  # a new tenant gets its check record with its first key
        if not reply or len(reply) != 2 or reply[1] is None:
            raise TenantKeyDamaged(tenant, f"tenant key of {tenant!r} is damaged: its current version is missing")
        try:
            version = int(_text(reply[0]))
        except ValueError:
            raise TenantKeyDamaged(tenant, f"tenant key of {tenant!r} is damaged: its current version is not a number"
                                   ) from None
        return version, self._tenant_aead(tenant, version, reply[1])

    def _unwrap_one(self, tenant: str, subject: str, version: int, blob: bytes) -> bytes:
        aad = subject_key_aad(tenant, subject)
        nonce, ct = blob[:_NONCE_BYTES], blob[_NONCE_BYTES:]
        cached = self._tenant_keys.get((tenant, version))
        if cached is not None:
            try:
                return cached[1].decrypt(nonce, ct, aad)
            except InvalidTag:
                # Perhaps a stale cache entry (tenant deleted and created again): ask Redis.
                self._tenant_keys.pop((tenant, version), None)
        aead = self._fetch_tenant_aead(tenant, version)
        try:
            return aead.decrypt(nonce, ct, aad)
        except InvalidTag:
            raise _SubjectDamaged from None

    def _unwrap_values(self, tenant: str, values: dict[str, bytes | str]) -> tuple[dict[str, bytes], set[str]]:
        """Unwrap stored subject-key values: (keys, subjects whose records are damaged). A value whose
        tenant-key version a rotation removed is re-read; one still naming a missing version is damaged."""
        out: dict[str, bytes] = {}
        damaged: set[str] = set()
        pending = values
        for _ in range(_ATTEMPTS):
            retry = []
            for subject, value in pending.items():
                try:
                    version, blob = _parse_subject_value(tenant, value)
                    out[subject] = self._unwrap_one(tenant, subject, version, blob)
                except _VersionGone:
                    retry.append(subject)
                except _SubjectDamaged:
                    damaged.add(subject)
            if not retry:
                return out, damaged
            fresh = self._r.mget([subject_key_name(tenant, s) for s in retry])
            pending = {s: v for s, v in zip(retry, fresh) if v is not None}  # absent: destroyed meanwhile
        return out, damaged | set(pending)

    def _wrap_subject(self, aead: AESGCM, tenant: str, version: int, subject: str, key: bytes) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        blob = nonce + aead.encrypt(nonce, key, subject_key_aad(tenant, subject))
        return f"v{version}:" + base64.b64encode(blob).decode()

    def _refuse_if_deleted(self, tenant: str) -> None:
        # A batch validated before the workers learnt of a deletion must not start a new key
        # hierarchy after the purge (the store's script refuses its writes the same way).
        if self._r.exists(deleted_marker(tenant)):
            raise TenantDeleted(f"tenant {tenant!r} is deleted")

    def _create_subject_keys(self, tenant: str, missing: list[str]) -> dict[str, bytes]:
        self._refuse_if_deleted(tenant)
        out: dict[str, bytes] = {}
        h = tenant_hash_key(tenant)
        for _ in range(_ATTEMPTS):
            version, aead = self._current_tenant_key(tenant)
            fresh = {s: os.urandom(SUBJECT_KEY_BYTES) for s in missing}
            names = [subject_key_name(tenant, s) for s in missing]
            values = [self._wrap_subject(aead, tenant, version, s, fresh[s]) for s in missing]
            reply = self._create_script(keys=[h, *names], args=[str(version), *values])
            if reply == -1:
                continue  # a rotation made a newer version current meanwhile: wrap under that one
            losers = []
            for s, created in zip(missing, reply):
                if int(created) == 1:
                    out[s] = fresh[s]
                else:
                    losers.append(s)
            if not losers:
                return out
            # Another worker created these first: theirs is the key.
            found = self._r.mget([subject_key_name(tenant, s) for s in losers])
            keys, damaged = self._unwrap_values(tenant, {s: v for s, v in zip(losers, found) if v is not None})
            if damaged:
                raise TenantKeyDamaged(tenant, f"subject key records of tenant {tenant!r} are damaged",
                                       subjects=frozenset(damaged))
            out.update(keys)
            missing = [s for s in losers if s not in out]  # destroyed in between: create again
            if not missing:
                return out
        raise PrivacyError(f"could not create subject keys of tenant {tenant!r}: "
                           "the tenant key or the subject keys kept changing (concurrent rotations or erasures)")

    def _rewrap(self, tenant: str, new: int, names: list[bytes | str]) -> int:
        """Re-wrap the subject keys ``names`` under tenant-key version ``new``; returns how many changed."""
        h = tenant_hash_key(tenant)
        prefix_len = len(pipeline_prefix(tenant) + "subj:")
        new_aead = self._tenant_keys[(tenant, new)][1]
        done = 0
        pending = list(names)
        for _ in range(_ATTEMPTS):
            values = self._r.mget(pending)
            keys: list[bytes | str] = []
            args: list[bytes | str] = [str(new)]
            for name, value in zip(pending, values):
                if value is None:
                    continue  # destroyed (erasure): stays destroyed
                subject = _text(name)[prefix_len:]
                try:
                    version, blob = _parse_subject_value(tenant, value)
                    if version == new:
                        continue
                    key = self._unwrap_one(tenant, subject, version, blob)
                except _SubjectDamaged:
                    # Not skipped: the old version it needs would be pruned below. The rotation stops
                    # here (re-run it once the record is dealt with); nothing is lost meanwhile.
                    raise TenantKeyDamaged(tenant, f"a subject key record of tenant {tenant!r} is damaged; "
                                           "the rotation cannot complete", subjects=frozenset({subject})) from None
                except _VersionGone:
                    if self.tenant_key_version(tenant) != new:
                        raise KeyRotationConflict(
                            f"another rotation of tenant {tenant!r} started; it completes the re-wrap") from None
                    raise TenantKeyDamaged(
                        tenant, f"a subject key of tenant {tenant!r} refers to tenant-key v{version}, which does not "
                        "exist", subjects=frozenset({subject})) from None
                keys.append(name)
                args += [value, self._wrap_subject(new_aead, tenant, new, subject, key)]
            if not keys:
                return done
            reply = self._rewrap_script(keys=[h, *keys], args=args)
            if reply == -1:
                raise KeyRotationConflict(f"another rotation of tenant {tenant!r} started; it completes the re-wrap")
            done += sum(int(r) for r in reply)
            pending = [k for k, r in zip(keys, reply) if int(r) == 0]  # changed since read: look again
            if not pending:
                return done
        raise PrivacyError(f"subject keys of tenant {tenant!r} kept changing during the re-wrap")
