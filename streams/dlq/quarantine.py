"""The quarantine: the original bytes of rejected events a fix could rescue, encrypted, for a redrive.

A DLQ record holds no payload (it must hold no personal data), and the raw topic is pruned
seconds after a batch, so without this an event rejected for a reason an operator can fix (a
schema not yet deployed, a tenant onboarded late, a damaged key restored) would be lost. Events
rejected for one of ``REASONS`` are also written to the quarantine topic
(``STREAMS_QUARANTINE_TOPIC``, retention ``STREAMS_QUARANTINE_RETENTION_MS``, 7 days), and their
DLQ record points at the copy (``quarantine.ref``). ``streams dlq redrive`` sends them back
(``streams.dlq.redrive``).

A quarantined record is an envelope (JSON, record key ``<tenant or ->/<ref>``) naming only what
the DLQ record names (tenant, the subject's pseudonym, reason, source), around the original
record key and value sealed with AES-GCM (aad ``quarantine/<ref>``) under a key derived (HKDF)
from one of two keys:

* ``subject``: the subject's own key, when the record names an onboarded tenant and a subject
  and that key is at hand. An erasure destroys that key (and the pseudonym's way back,
  ``streams.dlq.subjects``), so the copy is unreadable from the erasure on: crypto-shredding, as
  for every other copy of the subject.
* ``quarantine``: otherwise (an unknown tenant, a record key that names no subject, a tenant
  whose keys are damaged), a key of the quarantine keyring (``streams.dlq.keys.DlqKeyring`` on the
  quarantine topic): rotated daily and destroyed once the quarantine's retention has passed
  after its successor took over, so no such copy outlives the retention. An erasure cannot
  single these out; a redrive checks the subject's consent after opening one and skips an
  erased subject's.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Collection, Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from streams.dlq.keys import DlqKeyring
from streams.dlq.reasons import Reason
from streams.errors import StreamsError, TenantFault
from streams.privacy.exceptions import TenantDeleted
from streams.records import Rejected

#: The reasons a fix can rescue; the others (malformed bytes, oversized, a producer writing as
#: another tenant, an invalid privacy request) would be rejected again whatever is fixed.
REASONS: frozenset[Reason] = frozenset({
    Reason.UNKNOWN_SCHEMA, Reason.SCHEMA_VIOLATION, Reason.UNKNOWN_TENANT, Reason.KEY_MISMATCH,
    Reason.PROCESSING_ERROR, Reason.KEY_ERROR, Reason.TENANT_UNAVAILABLE,
})
ENVELOPE_VERSION = 1
ROTATE_MS = 24 * 3600 * 1000  # a new quarantine key every day
_KEY_SHAPE = re.compile(rb"([a-z][a-z0-9_-]{1,31})/([A-Za-z0-9._:-]{1,128})")


class QuarantineError(StreamsError):
    """A quarantined record cannot be opened: its key is destroyed (erased, deleted or expired)."""


def _aad(ref: str) -> bytes:
    return f"quarantine/{ref}".encode()


def _aead(key: bytes) -> AESGCM:
    """A key of its own for sealing (HKDF), so the subject key's other uses never share one with it."""
    return AESGCM(HKDF(hashes.SHA256(), 32, salt=None, info=b"streams quarantine v1").derive(key))


def split_record_key(key: bytes | None) -> tuple[str, str] | None:
    """``(tenant, subject)`` of a ``<tenant>/<subject>`` record key, else None."""
    m = _KEY_SHAPE.fullmatch(key or b"")
    return (m.group(1).decode(), m.group(2).decode()) if m else None


@dataclass(frozen=True)
class Opened:
    """A quarantined record, opened: the original record key and value, and what the envelope says."""
    ref: str
    key: bytes | None
    value: bytes
    event_id: str | None
    envelope: dict[str, Any]


class Quarantine:
    """Seals rejected records for the quarantine topic and opens them again for a redrive.

    ``subject_key(tenant, subject, create)`` returns the subject's key (``KeyStore``-like: raises a
    tenant fault when that tenant's keys are damaged or it is deleted, ``KeyError``-like None when
    there is none and ``create`` is False); ``pseudonyms`` names subjects as the DLQ does;
    ``tenants`` are the onboarded tenants (a live view)."""

    def __init__(self, topic: str, keyring: DlqKeyring, subject_key: Callable[[str, str, bool], bytes | None],
                 pseudonyms: Callable[[str, str], str], tenants: Collection[str]) -> None:
        self.topic = topic
        self.keyring = keyring
        self._subject_key = subject_key
        self._pseudonyms = pseudonyms
        self._tenants = tenants

    def __repr__(self) -> str:
        return f"Quarantine(topic={self.topic!r})"

    def wants(self, rej: Rejected) -> bool:
        return rej.reason in REASONS and rej.payload is not None and isinstance(rej.payload.value, bytes)

    def _subject_of(self, rej: Rejected) -> tuple[str, str] | None:
        """The onboarded tenant and subject the record belongs to, if it says."""
        if rej.tenant and rej.subject is not None:
            return rej.tenant, rej.subject.value
        named = split_record_key(rej.key.value if rej.key is not None else None)
        if named is not None and named[0] in self._tenants:
            return named
        return None

    def seal(self, rej: Rejected, now_ms: int | None = None) -> tuple[str, bytes, bytes] | None:
        """``(ref, record key, envelope)`` for the quarantine topic, or None when ``rej`` is not kept.
        A fault of the system (Redis, the master key) raises: the caller holds the batch back."""
        if not self.wants(rej):
            return None
        ref = f"q-{uuid.uuid4().hex}"
        owner = self._subject_of(rej)
        claimed = split_record_key(rej.key.value if rej.key is not None else None)
        secret = json.dumps({
            "key": base64.b64encode(rej.key.value).decode() if rej.key is not None else None,
            "value": base64.b64encode(rej.payload.value).decode(),
            "event_id": rej.event_id,
        }, separators=(",", ":")).encode()
        envelope: dict[str, Any] = {
            "v": ENVELOPE_VERSION, "ref": ref, "reason": rej.reason.value, "detail": rej.detail,
            "tenant": rej.tenant,
            # a tenant name the record key claims (an unknown tenant's, say): a name, never a subject
            "claimed_tenant": claimed[0] if claimed else None,
            "subject": None, "event_type": rej.event_type,
            "source": {"topic": rej.source.topic, "partition": rej.source.partition, "offset": rej.source.offset,
                       "timestamp_ms": rej.source.timestamp_ms},
            "quarantined_at_ms": now_ms if now_ms is not None else int(time.time() * 1000),
        }
        key: bytes | None = None
        if owner is not None:
            try:
                envelope["subject"] = self._pseudonyms(*owner)
                key = self._subject_key(owner[0], owner[1], True)
            except Exception as exc:
                if not isinstance(exc, TenantFault):
                    raise
                envelope["subject"], key = None, None  # the tenant's keys are damaged, or it is deleted
        if key is not None:
            envelope.update(sealed_with="subject", subject_tenant=owner[0])
        else:
            version, key = self.keyring.current()
            envelope.update(sealed_with="quarantine", key_version=version)
        nonce = os.urandom(12)
        envelope["nonce"] = base64.b64encode(nonce).decode()
        envelope["sealed"] = base64.b64encode(_aead(key).encrypt(nonce, secret, _aad(ref))).decode()
        record_key = f"{rej.tenant or envelope['claimed_tenant'] or '-'}/{ref}".encode()
        return ref, record_key, json.dumps(envelope, separators=(",", ":")).encode()

    def seal_batch(self, rejected: Sequence[Rejected], now_ms: int | None = None
                   ) -> list[tuple[str, bytes, bytes] | None]:
        return [self.seal(r, now_ms) for r in rejected]

    def open(self, envelope: dict[str, Any], subject: str | None = None) -> Opened:
        """The original record of an envelope. ``subject``: the subject id behind the envelope's
        pseudonym (``streams.dlq.subjects``), needed when it is sealed with the subject's key.
        Raises ``QuarantineError`` when its key is gone (erased, deleted, expired)."""
        ref = envelope["ref"]
        if envelope.get("sealed_with") == "subject":
            if subject is None:
                raise QuarantineError("sealed with the subject's key, and the subject is no longer named "
                                      "(erased, or the DLQ's retention passed)")
            try:
                key = self._subject_key(envelope["subject_tenant"], subject, False)
            except Exception as exc:
                if not isinstance(exc, TenantFault):
                    raise
                raise QuarantineError(f"the tenant's keys are unusable: {exc}") from None
            if key is None:
                raise QuarantineError("the subject's key is destroyed (erased)")
        else:
            version = int(envelope["key_version"])
            key = dict(self.keyring.live()).get(version)
            if key is None:
                raise QuarantineError(f"quarantine key v{version} is destroyed (older than the retention)")
        try:
            secret = json.loads(_aead(key).decrypt(base64.b64decode(envelope["nonce"]),
                                                    base64.b64decode(envelope["sealed"]), _aad(ref)))
        except Exception:
            raise QuarantineError("the sealed record does not decrypt (damaged, or another key)") from None
        raw_key = base64.b64decode(secret["key"]) if secret.get("key") is not None else None
        return Opened(ref, raw_key, base64.b64decode(secret["value"]), secret.get("event_id"), envelope)


def quarantine_keyring(client: Any, provider: Any, topic: str, retention_ms: int) -> DlqKeyring:
    """The quarantine's keyring: daily keys, each destroyed ``retention_ms`` after its successor took over."""
    return DlqKeyring(client, provider, topic, rotate_ms=ROTATE_MS, retain_ms=retention_ms)


def subject_keys_of(keys: Any) -> Callable[[str, str, bool], bytes | None]:
    """``Quarantine``'s ``subject_key`` from a ``KeyStore``: None for a deleted tenant (its keys are
    gone: the quarantine key seals instead, and a redrive finds the tenant unknown)."""
    def subject_key(tenant: str, subject: str, create: bool) -> bytes | None:
        try:
            return keys.subject_keys(tenant, [subject], create=create).get(subject)
        except TenantDeleted:
            return None
    return subject_key
