"""The key hierarchy behind tokens and crypto-shredding.

::

    master key (KeyProvider: local key file, or a KMS; never leaves it)
      └─ wraps each tenant key, per version        (AES-256-GCM, 32 bytes)
           └─ wraps each subject key               (64 bytes: AES-SIV-512 for the tokens)

Erasure destroys a subject's key (``destroy_subject_key``): every token of that
subject, in every copy ever made, becomes irreversible at once. Rotating a
tenant key re-wraps the subject keys under a new tenant-key version; the
subject keys themselves never change, so every token ever issued stays
detokenizable.

Key material lives in Redis in a pipeline-only keyspace, ``k:{<tenant>}:``,
never under the tenants' ``t:{<tenant>}:`` prefix that tenant ACL users get:

=========================  ============================================================
``k:{t}:tenant``           HASH ``current`` -> ``"<n>"``; ``v<n>`` -> base64 of the tenant
                           key version n wrapped by the master key (aad
                           ``tenant-key/<t>/v<n>``)
``k:{t}:subj:<subject>``   STRING ``v<n>:`` + base64(nonce + AES-GCM(tenant key v<n>,
                           subject key, aad ``subject-key/<t>/<subject>``))
``k:{t}:check``            STRING base64 of 32 random bytes wrapped by the master key (aad
                           ``master-key-check/<t>``): tells a damaged tenant key from a
                           wrong master key (``MasterKeyCheck``)
=========================  ============================================================

The braces are a Redis Cluster hash tag: all of a tenant's keys share a slot,
so the Lua scripts below may touch the tenant hash and subject keys together.
Everything stored is ASCII, so a client with ``decode_responses=True`` works too.

Nothing here logs, and no message, exception or ``repr`` contains key bytes
(raw, wrapped or encoded). Unwrapped tenant keys are cached in memory per
(tenant, version); subject keys never are, so a destroyed subject key is
unusable on every worker at once.

``KeyStore`` is synchronous (redis-py); the async worker calls it through
``run_in_executor``. Redis errors (``redis.RedisError``, ``OSError``) propagate
as they are, for the caller to retry.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Protocol, runtime_checkable

import redis
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from streams.privacy.exceptions import (
    KeyIntegrityError,
    KeyNotFound,
    KeyProviderError,
    KeyRotationConflict,
    PrivacyError,
    TenantDeleted,
    TenantKeyDamaged,
)
from streams.tenancy.names import validate_tenant_name
from streams.tenancy.registry import deleted_marker

#: Bytes of a subject key: AES-SIV with a 512-bit key (two AES-256 halves).
SUBJECT_KEY_BYTES = 64
#: Bytes of a tenant key (AES-256-GCM).
TENANT_KEY_BYTES = 32
#: Bytes of the master key of ``LocalKeyFileProvider`` (AES-256-GCM).
MASTER_KEY_BYTES = 32

_NONCE_BYTES = 12
_TAG_BYTES = 16
# Subject keys are handled in chunks of this many per MGET / script call: one
# round trip for a worker batch, a bounded time inside Redis for huge inputs.
_CHUNK = 1000
_SCAN_COUNT = 500
_ATTEMPTS = 8


@runtime_checkable
class KeyProvider(Protocol):
    """Holds the master key and wraps/unwraps with it; the master key never leaves the provider.

    ``key_id`` names the master key (never derived reversibly from it).
    ``wrap(plaintext, aad)`` encrypts with authentication; ``unwrap(wrapped, aad)``
    returns the plaintext only if ``wrapped`` came from ``wrap`` with the same
    ``aad``, else raises ``KeyIntegrityError``. The ``aad`` binds a wrapped key to
    what it is for (``tenant-key/<tenant>/v<n>``), so one cannot be swapped for
    another.

    A KMS-backed provider implements the same three members with the KMS doing
    the cryptography: ``key_id`` is the KMS key's id/ARN; ``wrap`` is the KMS
    *Encrypt* call (AWS ``kms.encrypt(KeyId=..., Plaintext=plaintext,
    EncryptionContext={"streams": aad.decode()})``, GCP
    ``encrypt(name=..., plaintext=..., additional_authenticated_data=aad)``,
    Vault transit ``encrypt`` with ``context``) returning the ciphertext blob; and
    ``unwrap`` is *Decrypt* with the same encryption context, mapping the KMS's
    invalid-ciphertext error to ``KeyIntegrityError`` and access or availability
    errors to ``KeyProviderError``. Payloads are 32-byte tenant keys, far under
    the KMS limits (4 KiB), and ``KeyStore`` caches unwrapped tenant keys, so the
    KMS sees one call per tenant-key version per process.
    """

    @property
    def key_id(self) -> str: ...

    def wrap(self, plaintext: bytes, aad: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes: ...


# --------------------------------------------------------------------------- local key file

_HEADER_PREFIX = "streams-master-key v1"
_HEADER = (_HEADER_PREFIX + ": AES-256-GCM master key, base64 on the next line. SECRET: keep it mode 0600 "
           "and backed up; losing it makes every token irreversible.")
_WRAP_FORMAT = 1
_MAX_KEY_FILE_BYTES = 4096


class _CorruptKeyFile(Exception):
    pass


def _parse_key_file(data: bytes) -> bytes:
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise _CorruptKeyFile from None
    lines = [line.strip() for line in text.split("\n")]
    while lines and lines[-1] == "":
        lines.pop()
    if len(lines) != 2 or not lines[0].startswith(_HEADER_PREFIX):
        raise _CorruptKeyFile
    try:
        key = base64.b64decode(lines[1], validate=True)
    except (binascii.Error, ValueError):
        raise _CorruptKeyFile from None
    if len(key) != MASTER_KEY_BYTES:
        raise _CorruptKeyFile
    return key


class LocalKeyFileProvider:
    """A master key in a local file: for development and single-machine deployments.

    The file holds a header line saying what it is and the 32-byte key in
    base64. It is created on first use (``create=True``) with mode 0600, its
    folder with mode 0700 when this creates it; creation is atomic (the complete
    file is written to a fresh ``O_CREAT|O_EXCL`` temporary file and published
    with ``link``, which never replaces an existing file), so processes racing
    to create it all end up with the one key that won. A file that group or
    others may access, that another user owns, or that is corrupt is refused
    with ``KeyProviderError`` saying how to fix it.

    Wrapped format: format byte (1) + 12-byte random nonce + AES-256-GCM
    ciphertext and tag, the ``aad`` authenticated.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self._path = Path(path)
        self._create = create
        self._lock = threading.Lock()
        self._aead: AESGCM | None = None
        self._key_id: str | None = None

    def __repr__(self) -> str:
        state = f"key_id={self._key_id!r}" if self._key_id else "not loaded"
        return f"LocalKeyFileProvider(path={str(self._path)!r}, {state})"

    @property
    def path(self) -> Path:
        return self._path

    @property
    def key_id(self) -> str:
        self._load()
        assert self._key_id is not None
        return self._key_id

    def load(self) -> None:
        """Read (or create) the key now: call at start-up to fail fast on a bad key file."""
        self._load()

    def wrap(self, plaintext: bytes, aad: bytes) -> bytes:
        aead = self._load()
        nonce = os.urandom(_NONCE_BYTES)
        return bytes([_WRAP_FORMAT]) + nonce + aead.encrypt(nonce, bytes(plaintext), bytes(aad))

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        aead = self._load()
        wrapped = bytes(wrapped)
        if len(wrapped) < 1 + _NONCE_BYTES + _TAG_BYTES or wrapped[0] != _WRAP_FORMAT:
            raise KeyIntegrityError("wrapped key is malformed or of an unknown format")
        try:
            return aead.decrypt(wrapped[1:1 + _NONCE_BYTES], wrapped[1 + _NONCE_BYTES:], bytes(aad))
        except InvalidTag:
            raise KeyIntegrityError(
                f"cannot unwrap with master key {self._key_id}: a different master key wrapped it, "
                "it belongs to another context, or it was tampered with") from None

    # -- loading

    def _load(self) -> AESGCM:
        aead = self._aead
        if aead is not None:
            return aead
        with self._lock:
            if self._aead is None:
                key = self._read_or_create()
                self._key_id = "local:" + hmac.new(key, b"streams master key id", hashlib.sha256).hexdigest()[:16]
                self._aead = AESGCM(key)
            return self._aead

    def _read_or_create(self) -> bytes:
        try:
            return self._read()
        except FileNotFoundError:
            if not self._create:
                raise KeyProviderError(
                    f"master key file {self._path} does not exist; restore it from backup "
                    "(keys wrapped with a lost master key cannot be recovered)") from None
        self._create_file()
        try:
            return self._read()
        except FileNotFoundError:
            raise KeyProviderError(f"master key file {self._path} vanished right after it was created") from None

    def _read(self) -> bytes:
        path = self._path
        deadline = time.monotonic() + 1.0
        while True:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise
            except OSError as exc:
                raise KeyProviderError(f"cannot open master key file {path}: {exc.strerror}") from None
            try:
                st = os.fstat(fd)
                self._check_safe(st)
                data = os.read(fd, _MAX_KEY_FILE_BYTES + 1)
            except OSError as exc:
                raise KeyProviderError(f"cannot read master key file {path}: {exc.strerror}") from None
            finally:
                os.close(fd)
            try:
                return _parse_key_file(data)
            except _CorruptKeyFile:
                # Only on file systems without hard links is a file ever visible half
                # written (see _create_file): give a brand-new one a moment.
                young = time.time() - st.st_mtime < 2.0
                if young and len(data) < len(_HEADER) + 45 and time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                raise KeyProviderError(
                    f"master key file {path} is corrupt: expected a '{_HEADER_PREFIX}' header line and "
                    f"{MASTER_KEY_BYTES} base64-encoded bytes. Restore it from backup; only if nothing was "
                    "ever wrapped with it, delete it and a new key is created.") from None

    def _check_safe(self, st: os.stat_result) -> None:
        path = self._path
        if not stat.S_ISREG(st.st_mode):
            raise KeyProviderError(f"master key file {path} is not a regular file")
        euid = os.geteuid()
        if st.st_uid != euid:
            raise KeyProviderError(
                f"master key file {path} is owned by uid {st.st_uid}, not by this process' user (uid {euid}); "
                f"fix: chown {euid} {path} (or run as its owner)")
        if st.st_mode & 0o077:
            raise KeyProviderError(
                f"master key file {path} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
                f"fix: chmod 600 {path}")

    def _create_file(self) -> None:
        path = self._path
        parent = path.parent
        try:
            parent.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.mkdir(parent, 0o700)
            except FileExistsError:
                pass
            else:
                os.chmod(parent, 0o700)  # the umask may have narrowed it; never widened
            content = (_HEADER + "\n" + base64.b64encode(os.urandom(MASTER_KEY_BYTES)).decode() + "\n").encode()
            tmp = parent / f".{path.name}.{os.getpid()}.{os.urandom(6).hex()}.tmp"
            self._write_new(tmp, content)
            try:
                try:
                    os.link(tmp, path)  # atomic, and never replaces: the first process to link wins
                except FileExistsError:
                    pass
                except OSError:
                    # No hard links here (some network/overlay file systems): create the
                    # file itself exclusively; readers retry briefly on a half-written one.
                    try:
                        self._write_new(path, content)
                    except FileExistsError:
                        pass
            finally:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
            dir_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise KeyProviderError(
                f"cannot create master key file {path}: {exc.strerror}; fix: make {parent} writable by this "
                "user, or point STREAMS_MASTER_KEY_FILE at a writable place") from None

    @staticmethod
    def _write_new(path: Path, content: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------- Redis layout

def key_prefix(tenant: str) -> str:
    """The pipeline-only keyspace of a tenant's key material (never granted to tenant ACL users)."""
    return f"k:{{{tenant}}}:"


def tenant_hash_key(tenant: str) -> str:
    return f"{key_prefix(tenant)}tenant"


def subject_key_name(tenant: str, subject: str) -> str:
    return f"{key_prefix(tenant)}subj:{subject}"


def tenant_key_aad(tenant: str, version: int) -> bytes:
    return f"tenant-key/{tenant}/v{version}".encode()


def subject_key_aad(tenant: str, subject: str) -> bytes:
    return f"subject-key/{tenant}/{subject}".encode()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


_SUBJECT_VALUE_RE = re.compile(r"v([1-9][0-9]{0,9}):([A-Za-z0-9+/=]+)")
_SUBJECT_BLOB_BYTES = _NONCE_BYTES + SUBJECT_KEY_BYTES + _TAG_BYTES


def _parse_subject_value(tenant: str, value: bytes | str) -> tuple[int, bytes]:
    try:
        m = _SUBJECT_VALUE_RE.fullmatch(_text(value))
        blob = base64.b64decode(m.group(2), validate=True) if m else b""
    except (UnicodeDecodeError, binascii.Error, ValueError):
        m, blob = None, b""
    if m is None or len(blob) != _SUBJECT_BLOB_BYTES:
        raise _SubjectDamaged
    return int(m.group(1)), blob


# Returns {current, wrapped current} or nil; with a candidate (ARGV[1] ~= ''), creates version 1 if none.
_CURRENT_TENANT_KEY_LUA = """
local cur = redis.call('HGET', KEYS[1], 'current')
if not cur then
  if ARGV[1] == '' then return false end
  redis.call('HSET', KEYS[1], 'v1', ARGV[1], 'current', '1')
  return {'1', ARGV[1]}
end
return {cur, redis.call('HGET', KEYS[1], 'v' .. cur)}
"""

# SET NX of new subject keys, only while ARGV[1] is still the current tenant-key version
# (so a rotation that has started never misses a key wrapped under an old version).
# KEYS: tenant hash, subject keys. ARGV: version, values. Returns -1 (stale) or 1/0 per key.
_CREATE_SUBJECT_KEYS_LUA = """
if redis.call('HGET', KEYS[1], 'current') ~= ARGV[1] then return -1 end
local out = {}
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], ARGV[i], 'NX') then out[i - 1] = 1 else out[i - 1] = 0 end
end
return out
"""

# Starts a rotation: adds version ARGV[2] and makes it current, if ARGV[1] is still current.
_BEGIN_ROTATION_LUA = """
if redis.call('HGET', KEYS[1], 'current') ~= ARGV[1] then return 0 end
if redis.call('HEXISTS', KEYS[1], 'v' .. ARGV[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'v' .. ARGV[2], ARGV[3], 'current', ARGV[2])
return 1
"""

# Compare-and-set of re-wrapped subject keys: a key destroyed or changed since it was read is
# left alone (a concurrent erasure is never undone). -1 if another rotation made a newer version current.
# KEYS: tenant hash, subject keys. ARGV: new version, then per key the value read and its replacement.
_REWRAP_LUA = """
if redis.call('HGET', KEYS[1], 'current') ~= ARGV[1] then return -1 end
local out = {}
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[2 * i - 2] then
    redis.call('SET', KEYS[i], ARGV[2 * i - 1])
    out[i - 1] = 1
  else
    out[i - 1] = 0
  end
end
return out
"""

# Deletes tenant-key versions older than ARGV[1] (never the current one); returns how many.
_PRUNE_LUA = """
local keep = tonumber(ARGV[1])
local cur = tonumber(redis.call('HGET', KEYS[1], 'current'))
local n = 0
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  local v = tonumber(string.match(f, '^v(%d+)$'))
  if v and v < keep and v ~= cur then
    redis.call('HDEL', KEYS[1], f)
    n = n + 1
  end
end
return n
"""


# --------------------------------------------------------------------------- damaged record or wrong master key

def check_key_name(tenant: str) -> str:
    """The tenant's master-key check record (see ``MasterKeyCheck``)."""
    return f"{key_prefix(tenant)}check"


def check_aad(tenant: str) -> bytes:
    return f"master-key-check/{tenant}".encode()


class MasterKeyCheck:
    """Tells "this tenant's key record is damaged" from "the master key is wrong".

    To AES-GCM both look alike: the tenant key's tag does not verify. They must be handled
    apart: a damaged record is a fault of its tenant alone (its events go to the DLQ as
    ``key_error``, the other tenants go on), while a wrong master key (another key file
    mounted, another KMS key) unwraps nothing and is every tenant's fault (the batch is held
    back until an operator fixes it, as for a provider that is down).

    The decision: the master key is proven good when it unwraps another record of the same
    tenant, its check record ``k:{t}:check`` (32 random bytes the master key wrapped, aad
    ``master-key-check/<t>``). It is made (SET NX) with the tenant's first key, or by the first
    process that unwraps the tenant key once this check exists (a tenant older than it). When
    the tenant key does not unwrap, ``blame`` reads the check record:

    * it unwraps: the master key is right, the tenant key record is damaged: ``TenantKeyDamaged``;
    * it does not unwrap: the master key is wrong (or both records are damaged): ``KeyProviderError``,
      retried, every tenant held back: the safe side; the message says what to look at;
    * it is missing: nothing tells the two apart (a tenant damaged before any worker with this
      check unwrapped its key, or the record deleted): ``KeyProviderError``, held back, as before.

    Per tenant, not one record for the deployment: a wrong master key that makes a new tenant's
    keys makes that tenant's check record too, and it still cannot unwrap any older tenant's,
    so those are still held back, not dead-lettered. A provider that cannot be reached raises
    ``KeyProviderError`` itself and never gets here. Off the hot path: one EXISTS per tenant per
    process, and reads only after a failed unwrap (a check record this process verified once is
    not unwrapped again while it is unchanged).
    """

    def __init__(self, redis_client: redis.Redis, provider: KeyProvider) -> None:
        self._r = redis_client
        self._provider = provider
        self._ensured: set[str] = set()  # tenants whose check record exists
        self._verified: dict[str, bytes | str] = {}  # tenant -> the stored check record this process unwrapped

    def ensure(self, tenant: str, force: bool = False) -> None:
        """Make the tenant's check record if it has none. Call only after the master key is proven for
        the tenant: it made the tenant's first key (``force``: look even if this process saw one
        before, which another process may have deleted with the tenant), or it unwrapped the stored one."""
        if tenant in self._ensured and not force:
            return
        if not self._r.exists(check_key_name(tenant)):
            wrapped = self._provider.wrap(os.urandom(32), check_aad(tenant))
            self._r.set(check_key_name(tenant), base64.b64encode(wrapped), nx=True)
        self._ensured.add(tenant)

    def forget(self, tenant: str) -> None:
        self._ensured.discard(tenant)
        self._verified.pop(tenant, None)

    def blame(self, tenant: str, what: str) -> TenantKeyDamaged:
        """``what`` of ``tenant`` did not unwrap: returns ``TenantKeyDamaged`` to raise when the master key
        unwraps the tenant's check record; raises ``KeyProviderError`` when the master key may be at fault."""
        stored = self._r.get(check_key_name(tenant))
        if stored is None:
            raise KeyProviderError(
                f"{what} of tenant {tenant!r} does not unwrap, and no check record ({check_key_name(tenant)}) "
                "tells a damaged record from a wrong master key: held back. Check STREAMS_MASTER_KEY_FILE or "
                "the key provider first")
        if self._verified.get(tenant) != stored:
            try:
                self._provider.unwrap(base64.b64decode(stored, validate=True), check_aad(tenant))
            except (KeyIntegrityError, binascii.Error, ValueError):
                raise KeyProviderError(
                    f"{what} of tenant {tenant!r} does not unwrap, nor does its check record: the wrong master "
                    "key (STREAMS_MASTER_KEY_FILE or the KMS key), or both records are damaged; held back until "
                    "an operator fixes it") from None
            self._verified[tenant] = stored
        return TenantKeyDamaged(tenant, f"{what} of tenant {tenant!r} is damaged (the master key is good): "
                                        "its events are set aside")


class _VersionGone(Exception):
    """The tenant-key version a subject key referred to is gone (a rotation moved it on)."""


class _SubjectDamaged(Exception):
    """A subject key record is malformed, or does not unwrap under its (good) tenant key."""


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
            cursor, names = self._r.scan(cursor, match=f"{key_prefix(tenant)}subj:*", count=_SCAN_COUNT)
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
            cursor, names = self._r.scan(cursor, match=f"{key_prefix(tenant)}*", count=_SCAN_COUNT)
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
        prefix_len = len(key_prefix(tenant) + "subj:")
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
