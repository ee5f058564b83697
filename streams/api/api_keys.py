"""API keys of the HTTP data API: stored hashed, each bound to one tenant (or to the operators) and one role.

Token format
    ``stk_<key_id>_<secret>``: ``key_id`` is 12 hex characters (not secret: it
    names the key in listings and in the audit trail), ``secret`` is
    ``secrets.token_urlsafe(32)`` (256 random bits, 43 characters). The token
    is shown once, by ``create``; only the SHA-256 of the secret is stored.
    A plain hash suffices because the secret is a random 256-bit value, not a
    password a person chose: nobody can guess or dictionary-attack it, so a
    slow KDF (bcrypt, scrypt, argon2) would add a per-request cost and nothing
    else.

Redis layout (the keys are built in ``streams.keyspace``; the operator's keyspace: tenant Redis
users get ACLs on ``t:{<tenant>}:*`` only, so nothing here may live under ``t:``)

==========================  ===========================================================
``api:key:<key_id>``        HASH ``tenant`` ("" for operator keys), ``role``, ``label``,
                            ``created_at_ms``, ``secret_sha256`` (hex)
``api:tenant:{<tenant>}``   SET of the tenant's key ids (``revoke_tenant`` reads it)
``api:operators``           SET of the operator key ids
==========================  ===========================================================

The hash and the sets are written without MULTI (they would be in different
Redis Cluster slots) but in an order that fails safe: ``create`` adds the id
to its set before it writes the hash, so a key that authenticates is always
listed and ``revoke_tenant`` finds it; ``revoke`` deletes the hash first, so
a key stops working before it leaves the listing.

Nothing here logs, and no exception message or return value contains a token,
a secret or its hash (``list`` returns metadata only).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any

import redis

from streams.keyspace import API_KEY_PREFIX, API_OPERATORS_SET, api_key_hash_key, api_tenant_set_key
from streams.tenancy.names import validate_tenant_name

TOKEN_PREFIX = "stk_"
KEY_ID_HEX = 12
MAX_LABEL = 200
# token_urlsafe(32) is 43 characters of the URL-safe base64 alphabet (no padding).
_TOKEN_RE = re.compile(r"stk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_KEY_ID_RE = re.compile(r"[0-9a-f]{12}")
# Compared against when the key id is unknown, so an unknown and a known key take the same steps.
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()


class Role(str, Enum):
    """What a key may do: read its tenant's data; also detokenize; file its tenant's privacy requests (and
    read their receipts; no tenant data); or operate (no tenant data)."""

    READER = "reader"
    DETOKENIZER = "detokenizer"
    PRIVACY = "privacy"
    OPERATOR = "operator"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. Operator keys have ``tenant`` None: they belong to no tenant."""

    key_id: str
    tenant: str | None
    role: Role


def parse_token(token: str) -> tuple[str, str] | None:
    """(key_id, secret) of a syntactically valid token, else None. Says nothing about whether it exists."""
    if not isinstance(token, str):
        return None
    m = _TOKEN_RE.fullmatch(token)
    return (m.group(1), m.group(2)) if m else None


def key_id_of(token: str) -> str | None:
    """The key id of a well-formed token (not secret: it may go into the audit trail), else None."""
    parsed = parse_token(token)
    return parsed[0] if parsed else None


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def _text(v: bytes | str | None) -> str:
    if v is None:
        return ""
    return v.decode() if isinstance(v, bytes) else v


class ApiKeyStore:
    """Creates, authenticates, revokes and lists API keys in Redis (works with or without decode_responses)."""

    def __init__(self, client: redis.Redis) -> None:
        self._r = client

    def __repr__(self) -> str:
        return "ApiKeyStore()"

    def create(self, tenant: str | None, role: Role, label: str = "") -> tuple[str, str]:
        """Make a key and return ``(key_id, token)``. The token is not stored anywhere: show it once.

        Operator keys have no tenant; every other role needs one (a valid tenant name).
        """
        role = Role(role)
        if role is Role.OPERATOR:
            if tenant is not None:
                raise ValueError("operator keys belong to no tenant (pass tenant=None)")
        else:
            if tenant is None:
                raise ValueError(f"a {role.value} key needs a tenant")
            validate_tenant_name(tenant)
        if not isinstance(label, str) or len(label) > MAX_LABEL or any(ord(c) < 32 for c in label):
            raise ValueError(f"the label must be at most {MAX_LABEL} printable characters")
        key_id = secrets.token_hex(KEY_ID_HEX // 2)
        secret = secrets.token_urlsafe(32)
        fields = {"tenant": tenant or "", "role": role.value, "label": label,
                  "created_at_ms": str(int(time.time() * 1000)), "secret_sha256": _secret_hash(secret)}
        # Random 48-bit ids: a collision with an existing key is unlikely but would overwrite it, so
        # check (two creators drawing the same id at the same moment is left to chance: ~2^-48).
        for _ in range(5):
            if not self._r.exists(api_key_hash_key(key_id)):
                break
            key_id = secrets.token_hex(KEY_ID_HEX // 2)
        else:  # pragma: no cover - 5 collisions of random 48-bit ids
            raise RuntimeError("could not allocate an API key id")
        # Listed first, then usable (see the module docstring): revoke_tenant never misses a live key.
        self._r.sadd(API_OPERATORS_SET if tenant is None else api_tenant_set_key(tenant), key_id)
        self._r.hset(api_key_hash_key(key_id), mapping=fields)
        return key_id, f"{TOKEN_PREFIX}{key_id}_{secret}"

    def authenticate(self, token: str) -> Principal | None:
        """The key's principal, or None for a malformed, unknown or revoked token.

        The secret's hash is compared in constant time, also when the key id is
        unknown (against a dummy hash), so timing tells nothing about the secret.
        """
        parsed = parse_token(token)
        if parsed is None:
            return None
        key_id, secret = parsed
        stored = self._r.hgetall(api_key_hash_key(key_id))
        record = {_text(k): _text(v) for k, v in stored.items()} if stored else {}
        expected = record.get("secret_sha256") or _DUMMY_HASH
        if not hmac.compare_digest(_secret_hash(secret).encode(), expected.encode()) or not record:
            return None
        try:
            role = Role(record.get("role", ""))
        except ValueError:
            return None  # a damaged record authenticates nobody
        tenant = record.get("tenant") or None
        if (role is Role.OPERATOR) != (tenant is None):
            return None
        return Principal(key_id, tenant, role)

    def revoke(self, key_id: str) -> bool:
        """Delete one key; True if it existed. Effective for the next request on every worker."""
        if not isinstance(key_id, str) or not _KEY_ID_RE.fullmatch(key_id):
            return False
        tenant = _text(self._r.hget(api_key_hash_key(key_id), "tenant"))
        existed = bool(self._r.delete(api_key_hash_key(key_id)))  # unusable from here on
        self._r.srem(api_tenant_set_key(tenant) if tenant else API_OPERATORS_SET, key_id)
        return existed

    def revoke_tenant(self, tenant: str) -> int:
        """Delete every key of a tenant (offboarding, a leak); returns how many existed."""
        validate_tenant_name(tenant)
        ids = sorted(_text(i) for i in self._r.smembers(api_tenant_set_key(tenant)))
        n = 0
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            n += int(self._r.delete(*[api_key_hash_key(k) for k in chunk]))
            self._r.srem(api_tenant_set_key(tenant), *chunk)
        return n

    def get(self, key_id: str) -> dict[str, Any] | None:
        """Metadata of one key (as ``list`` gives it, never the hash), or None if there is no such key."""
        if not isinstance(key_id, str) or not _KEY_ID_RE.fullmatch(key_id):
            return None
        rec = {_text(k): _text(v) for k, v in self._r.hgetall(api_key_hash_key(key_id)).items()}
        return _metadata(key_id, rec) if rec else None

    def list(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Metadata of the keys of ``tenant``, or of every key (operators too) when None. Never hashes.

        Sorted by creation time. Ids whose hash is gone (a create interrupted
        between its two writes) are left out.
        """
        if tenant is not None:
            validate_tenant_name(tenant)
            ids = sorted(_text(i) for i in self._r.smembers(api_tenant_set_key(tenant)))
        else:
            # Operator-only and rare: a SCAN of the api:key: prefix is simpler than a third index.
            ids = sorted({_text(k)[len(API_KEY_PREFIX):]
                          for k in self._r.scan_iter(match=f"{API_KEY_PREFIX}*", count=500)})
        out = []
        for key_id in ids:
            rec = {_text(k): _text(v) for k, v in self._r.hgetall(api_key_hash_key(key_id)).items()}
            if not rec:
                continue
            out.append(_metadata(key_id, rec))
        out.sort(key=lambda d: (d["created_at_ms"], d["key_id"]))
        return out


def _metadata(key_id: str, rec: dict[str, str]) -> dict[str, Any]:
    """What may be shown of a key: never ``secret_sha256``."""
    return {"key_id": key_id, "tenant": rec.get("tenant") or None, "role": rec.get("role"),
            "label": rec.get("label", ""), "created_at_ms": int(rec.get("created_at_ms") or 0)}
