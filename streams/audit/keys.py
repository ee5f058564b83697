"""Custody of the audit signing keys: private keys wrapped by the key provider, public keys published.

Each writer (a signing identity: ``worker:<app_id>`` for the workers of one
consumer group, ``cli:<login>`` for a person running the CLI) has an Ed25519
key pair per trail (audit topic). Layout in Redis, under one hash tag so the
scripts below touch both keys atomically (Redis Cluster too)::

    audit:{<trail>}:signer:<writer>   HASH  current -> kid
                                            <kid>   -> base64(KeyProvider.wrap(raw private key,
                                                       aad "audit-signing-key/<trail>/<writer>/<kid>"))
    audit:{<trail>}:pub               HASH  <kid>   -> JSON public key entry (writer, key, created, retired)

Custody
    The private key exists unwrapped only in the memory of a process that
    holds the master key (``LocalKeyFileProvider`` in development, a KMS in
    production) and signs with it; it is never logged, produced or stored in
    the clear. Whoever can write the ``audit`` topic but has neither the
    master key nor the pipeline's Redis rights cannot sign. The signer keys
    are pipeline-only (no tenant ACL user matches ``audit:*``).

Publication
    ``audit:{<trail>}:pub`` holds only public keys. An auditor verifies with
    read access to the topic and to that one key, or with no Redis access at
    all from an exported keyring file (``streams audit keys export``); pinning
    that file (keeping a copy outside the pipeline's reach) also protects the
    verification against someone who can write the pipeline's Redis.

Rotation
    ``rotate(writer)`` makes a new key pair current and marks the old public
    key retired (it stays published: it still verifies what it signed). A
    process picks the new key up when it next opens an ``AuditLog``; until
    then it signs with the retired key, which keeps verifying. Keys are created
    on first use by a process of the writer, like the tenant keys.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from streams.audit.exceptions import AuditError
from streams.audit.signing import Keyring, PublicKey, Signer, is_writer, writer_name
from streams.connections import Purpose, redis_client
from streams.keyspace import audit_public_key as public_key  # the old names, kept for their importers
from streams.keyspace import audit_signer_key as signer_key
from streams.privacy.exceptions import KeyIntegrityError
from streams.privacy.keys import KeyProvider

if TYPE_CHECKING:
    from streams.audit.log import AuditLog

# KEYS[1] signer hash, KEYS[2] public hash. ARGV: kid, wrapped private key, public entry JSON.
# Makes the key current only if the writer has none: processes racing to create one all use the winner's.
_CREATE = """
local cur = redis.call('HGET', KEYS[1], 'current')
if cur then return cur end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], 'current', ARGV[1])
return ARGV[1]
"""

# ARGV: expected current kid, new kid, wrapped new private key, new public JSON, old public JSON (retired).
_ROTATE = """
local cur = redis.call('HGET', KEYS[1], 'current')
if cur ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[5], ARGV[2], ARGV[4])
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3], 'current', ARGV[2])
return 1
"""


def _now_ms() -> int:
    return int(time.time() * 1000)


def _aad(trail: str, writer: str, kid: str) -> bytes:
    return f"audit-signing-key/{trail}/{writer}/{kid}".encode()


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


class AuditKeyStore:
    """The audit signing keys of one trail: create, load, rotate, publish."""

    def __init__(self, client: redis.Redis, provider: KeyProvider, trail: str) -> None:
        if not trail:
            raise AuditError("the audit key store needs the trail (audit topic) name")
        self._r = client
        self._provider = provider
        self.trail = trail
        self._create = client.register_script(_CREATE)
        self._rotate = client.register_script(_ROTATE)

    def __repr__(self) -> str:
        return f"AuditKeyStore(trail={self.trail!r})"

    # -- writing side

    def _new_key(self, writer: str) -> tuple[Signer, str, str]:
        private = Ed25519PrivateKey.generate()
        signer = Signer(writer, private, _now_ms())
        raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        wrapped = base64.b64encode(self._provider.wrap(raw, _aad(self.trail, writer, signer.kid))).decode()
        return signer, wrapped, json.dumps(signer.public.to_json(), sort_keys=True)

    def signer(self, writer: str) -> Signer:
        """``writer``'s current signing key, created (and its public key published) on first use."""
        if not is_writer(writer):
            raise AuditError(f"{writer!r} is not a valid audit writer id (<kind>:<name>)")
        kid = self._r.hget(signer_key(self.trail, writer), "current")
        if kid is None:
            fresh, wrapped, public = self._new_key(writer)
            kid = self._create(keys=[signer_key(self.trail, writer), public_key(self.trail)],
                               args=[fresh.kid, wrapped, public])
        return self._load(writer, _text(kid))

    def _load(self, writer: str, kid: str) -> Signer:
        stored = self._r.hget(signer_key(self.trail, writer), kid)
        published = self._r.hget(public_key(self.trail), kid)
        if stored is None or published is None:
            raise AuditError(f"audit signing key {kid} of writer {writer} is incomplete in Redis "
                             "(private or public half missing)")
        try:
            raw = self._provider.unwrap(base64.b64decode(stored, validate=True), _aad(self.trail, writer, kid))
        except (binascii.Error, ValueError, KeyIntegrityError):
            raise AuditError(f"audit signing key {kid} of writer {writer} cannot be unwrapped with this master key "
                             "(another master key wrapped it, or it was tampered with)") from None
        entry = PublicKey.from_json(json.loads(published))
        signer = Signer(writer, Ed25519PrivateKey.from_private_bytes(raw), entry.created_ms)
        if signer.kid != kid or entry.writer != writer or entry.public_key != signer.public.public_key:
            raise AuditError(f"the published public key {kid} does not match writer {writer}'s private key")
        return signer

    def rotate(self, writer: str) -> tuple[str | None, str]:
        """A new current key for ``writer``; the old one is retired but stays published. (old kid, new kid)."""
        if not is_writer(writer):
            raise AuditError(f"{writer!r} is not a valid audit writer id (<kind>:<name>)")
        for _ in range(5):
            old = self._r.hget(signer_key(self.trail, writer), "current")
            if old is None:
                return None, self.signer(writer).kid
            old = _text(old)
            old_pub = self._r.hget(public_key(self.trail), old)
            if old_pub is None:
                raise AuditError(f"the public key {old} of writer {writer} is not published")
            entry = PublicKey.from_json(json.loads(old_pub))
            retired = json.dumps(PublicKey(entry.kid, entry.writer, entry.public_key, entry.created_ms,
                                           entry.retired_ms or _now_ms()).to_json(), sort_keys=True)
            signer, wrapped, public = self._new_key(writer)
            if self._rotate(keys=[signer_key(self.trail, writer), public_key(self.trail)],
                            args=[old, signer.kid, wrapped, public, retired]):
                return old, signer.kid
        raise AuditError(f"the audit key of writer {writer} kept changing during the rotation; try again")

    # -- reading side (what an auditor needs)

    def keyring(self) -> Keyring:
        """Every published public key of the trail, current and retired."""
        return keyring_from_redis(self._r, self.trail)

    def current_kids(self) -> dict[str, str]:
        """Writer -> its current kid (needs the pipeline's Redis rights)."""
        out = {}
        for writer in sorted(self.keyring().writers()):
            kid = self._r.hget(signer_key(self.trail, writer), "current")
            if kid is not None:
                out[writer] = _text(kid)
        return out


def keyring_from_redis(client: redis.Redis, trail: str) -> Keyring:
    """The published keyring of ``trail``: needs read access to ``audit:{<trail>}:pub`` only."""
    entries = client.hgetall(public_key(trail))
    keys: dict[str, PublicKey] = {}
    for kid, value in entries.items():
        try:
            entry = PublicKey.from_json(json.loads(value))
        except (ValueError, UnicodeDecodeError):
            raise AuditError(f"published audit key {_text(kid)!r} is not JSON") from None
        if entry.kid != _text(kid):
            raise AuditError(f"published audit key {_text(kid)!r} holds the key {entry.kid!r}")
        keys[entry.kid] = entry
    return Keyring(keys)


def keyring_from_file(path: str | Path) -> Keyring:
    try:
        return Keyring.loads(Path(path).read_bytes())
    except OSError as exc:
        raise AuditError(f"cannot read the audit keyring {path}: {exc.strerror}") from None


def describe_keyring(keyring: Keyring, current: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Rows for ``streams audit keys list``: public information only."""
    current = current or {}
    rows = []
    for kid in sorted(keyring, key=lambda k: (keyring[k].writer, keyring[k].created_ms)):
        k = keyring[kid]
        status = "current" if current.get(k.writer) == kid else ("retired" if k.retired_ms else "published")
        rows.append({"writer": k.writer, "kid": kid, "status": status, "created_ms": k.created_ms,
                     "retired_ms": k.retired_ms,
                     "public_key": base64.b64encode(k.public_key).decode()})
    return rows


def default_writer(actor: str) -> str:
    """The writer id of a process whose actor is ``actor``: ``worker:<app_id>`` stays, ``x`` becomes ``process:x``."""
    kind, sep, name = actor.partition(":")
    if sep and kind and kind.replace("-", "").isalpha() and kind.islower() and name:
        return writer_name(kind, name)
    return writer_name("process", actor)


def open_audit_log(settings: Any, actor: str, writer: str | None = None, *, client: redis.Redis | None = None,
                   provider: KeyProvider | None = None, chain_id: str | None = None,
                   timeout: float = 30.0) -> "AuditLog":
    """An ``AuditLog`` on ``settings.audit_topic`` signing as ``writer`` (default: from ``actor``).

    The writer's key comes from Redis (``settings.redis_url``), unwrapped with the
    master key (``settings.master_key_file``, created on first use like the
    worker does), and is created and published if the writer has none yet.
    """
    from streams.audit.log import AuditLog
    from streams.privacy.keys import LocalKeyFileProvider

    if client is None:
        client = redis_client(settings, Purpose.CLI)
    if provider is None:
        provider = LocalKeyFileProvider(settings.master_key_file)
    store = AuditKeyStore(client, provider, settings.audit_topic)
    try:
        signer = store.signer(writer or default_writer(actor))
    except (redis.RedisError, OSError) as exc:
        raise AuditError(f"cannot load the audit signing key from Redis: {exc}") from None
    return AuditLog(settings.kafka(), settings.audit_topic, actor, signer=signer, keyring=store.keyring,
                    chain_id=chain_id, timeout=timeout)
