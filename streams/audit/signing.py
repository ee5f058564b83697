"""Authenticating audit records: Ed25519 signatures per writer, and the keyring that verifies them.

Why signatures and not an HMAC
------------------------------
A hash chain alone proves nothing against someone who may write the audit
topic: they compute the hashes too (issue 8: a forged, self-consistent chain
blamed a detokenization on a real key id and recorded an erasure that never
ran, and ``verify`` said OK). Each record must therefore carry a tag that only
the pipeline's writers can make.

An HMAC with a pipeline audit key would do for the writers, but whoever
verifies an HMAC holds the key that makes it: every auditor would be able to
forge, and verification would need the pipeline's secret. With **Ed25519**
each writer signs with its own private key and anybody verifies with the
published public keys: an auditor checks the trail without any power to
write it ("auditors may read it"), a chain is attributable to one writer,
and a writer's key can be rotated or retired alone. Ed25519 (RFC 8032, via
``cryptography``) is deterministic (no per-signature randomness to get
wrong), signatures are 64 bytes and verification is fast (tens of µs: a
whole trail of millions of records verifies in minutes).

What is signed
--------------
``signing_input(record, trail)`` = ``b"streams-audit-v2\\n" + trail + b"\\n" +
canonical(record without "sig")``: every field, including ``writer``, ``kid``
(the signing key's id) and the chain ``hash``, plus the name of the trail
(the audit topic). A record cannot be edited, moved to another writer's
chain, re-attributed to another key, or replayed into another trail (a
staging topic's genuine records copied into production) without the
signature failing.

Keys
----
A key is named by its ``kid``: the first 16 hex characters of SHA-256 of its
raw 32-byte public key. A ``Keyring`` maps kids to ``PublicKey`` entries
(writer, public key, created, retired). It is all an auditor needs, next to
read access to the topic, and it holds nothing secret: the pipeline publishes
it (``streams.audit.keys``: in Redis, and exported as a JSON file). Where the
private keys live is ``streams.audit.keys``' business; this module is pure.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from streams.audit.exceptions import AuditError

ALGORITHM = "Ed25519"
SIGNATURE_BYTES = 64
DOMAIN = b"streams-audit-v2\n"
KEYRING_FORMAT = "streams-audit-keyring v1"

_KID_RE = re.compile(r"^[0-9a-f]{16}$")
# A writer is a signing identity: "<kind>:<name>", e.g. worker:streams-pipeline, cli:alice.
_WRITER_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}:[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")
_SIG_RE = re.compile(r"^[A-Za-z0-9_-]{86}$")  # base64url without padding of 64 bytes


def canonical(obj: Any) -> bytes:
    """The canonical JSON bytes the chain hashes and the signatures cover (``streams.audit.chain`` too)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def is_writer(value: Any) -> bool:
    return isinstance(value, str) and bool(_WRITER_RE.match(value))


def is_kid(value: Any) -> bool:
    return isinstance(value, str) and bool(_KID_RE.match(value))


def is_signature(value: Any) -> bool:
    return isinstance(value, str) and bool(_SIG_RE.match(value))


def writer_name(kind: str, name: str) -> str:
    """A valid writer id ``<kind>:<name>``; characters a writer id does not allow in ``name`` become '-'."""
    clean = re.sub(r"[^A-Za-z0-9_.@-]", "-", name)[:128].lstrip("_.@-") or "unknown"
    writer = f"{kind}:{clean}"
    if not is_writer(writer):
        raise AuditError(f"{writer!r} is not a valid audit writer id (<kind>:<name>)")
    return writer


def kid_of(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:16]


def signing_input(record: Mapping[str, Any], trail: str) -> bytes:
    body = {k: v for k, v in record.items() if k != "sig"}
    return DOMAIN + trail.encode() + b"\n" + canonical(body)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class PublicKey:
    """One published verification key of a writer."""

    kid: str
    writer: str
    public_key: bytes  # raw 32 bytes
    created_ms: int
    retired_ms: int | None = None  # set when a rotation replaced it; it still verifies what it signed

    def __post_init__(self) -> None:
        if not is_writer(self.writer):
            raise AuditError(f"keyring entry {self.kid!r}: {self.writer!r} is not a writer id")
        if len(self.public_key) != 32 or kid_of(self.public_key) != self.kid:
            raise AuditError(f"keyring entry {self.kid!r}: the public key does not match its kid")

    def verifies(self, record: Mapping[str, Any], trail: str) -> bool:
        sig = record.get("sig")
        if not is_signature(sig):
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(_unb64url(sig), signing_input(record, trail))
        except (InvalidSignature, ValueError, binascii.Error):
            return False
        return True

    def to_json(self) -> dict[str, Any]:
        return {"kid": self.kid, "writer": self.writer, "alg": ALGORITHM,
                "public_key": base64.b64encode(self.public_key).decode(),
                "created_ms": self.created_ms, "retired_ms": self.retired_ms}

    @classmethod
    def from_json(cls, obj: Any) -> "PublicKey":
        try:
            if obj.get("alg") != ALGORITHM:
                raise AuditError(f"keyring entry {obj.get('kid')!r} is not an {ALGORITHM} key")
            retired = obj.get("retired_ms")
            return cls(str(obj["kid"]), str(obj["writer"]), base64.b64decode(obj["public_key"], validate=True),
                       int(obj["created_ms"]), None if retired is None else int(retired))
        except (KeyError, TypeError, ValueError, AttributeError, binascii.Error):
            raise AuditError("a keyring entry is malformed") from None


class Keyring(Mapping[str, PublicKey]):
    """Published public keys by kid: what ``verify`` authenticates records with. Holds nothing secret."""

    def __init__(self, keys: Mapping[str, PublicKey] | None = None) -> None:
        self._keys = dict(keys or {})
        for kid, key in self._keys.items():
            if kid != key.kid:
                raise AuditError(f"keyring entry {kid!r} holds the key {key.kid!r}")

    def __getitem__(self, kid: str) -> PublicKey:
        return self._keys[kid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def writers(self) -> set[str]:
        return {k.writer for k in self._keys.values()}

    def to_json(self) -> dict[str, Any]:
        return {"format": KEYRING_FORMAT, "keys": [self._keys[k].to_json() for k in sorted(self._keys)]}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def loads(cls, text: str | bytes) -> "Keyring":
        try:
            obj = json.loads(text)
        except (ValueError, UnicodeDecodeError):
            raise AuditError("the audit keyring is not JSON") from None
        if not isinstance(obj, dict) or obj.get("format") != KEYRING_FORMAT or not isinstance(obj.get("keys"), list):
            raise AuditError(f"the audit keyring is not a '{KEYRING_FORMAT}' document")
        keys = [PublicKey.from_json(k) for k in obj["keys"]]
        return cls({k.kid: k for k in keys})

    def __repr__(self) -> str:
        return f"Keyring({sorted(self._keys)})"


class Signer:
    """A writer's current private key: signs records. Never printed, logged or serialized by this class."""

    def __init__(self, writer: str, private_key: Ed25519PrivateKey, created_ms: int = 0) -> None:
        if not is_writer(writer):
            raise AuditError(f"{writer!r} is not a valid audit writer id (<kind>:<name>)")
        self.writer = writer
        self._private = private_key
        raw = _raw_public(private_key.public_key())
        self.public = PublicKey(kid_of(raw), writer, raw, created_ms)

    @property
    def kid(self) -> str:
        return self.public.kid

    @classmethod
    def generate(cls, writer: str, created_ms: int = 0) -> "Signer":
        """A fresh in-memory key (tests, and ``streams.audit.keys`` before it wraps and stores one)."""
        return cls(writer, Ed25519PrivateKey.generate(), created_ms)

    def sign(self, record: Mapping[str, Any], trail: str) -> str:
        """The ``sig`` value of ``record`` (which must already carry this signer's writer and kid)."""
        if record.get("writer") != self.writer or record.get("kid") != self.kid:
            raise AuditError("a record is signed only by the writer and key it names")
        return _b64url(self._private.sign(signing_input(record, trail)))

    def __repr__(self) -> str:
        return f"Signer(writer={self.writer!r}, kid={self.kid!r})"
