"""The DLQ record: a JSON document describing why an event was rejected and where it was.

It carries no payload and nothing a producer chose: no value, no member or map
key name, no record key, no subject id, no event id in the clear. What it has
(README, "The DLQ"):

* ``reason``, ``detail``, ``field``: a reason code, and texts made of schema names,
  counts and positions; ``unknown_members`` (schema, count, positions) for JSON
  members the schema does not define;
* ``tenant`` (only an onboarded one), ``event_type``, ``schema_fingerprint`` (only a known one);
* ``subject``: the pseudonym of the subject (the audit trail's scheme), when the
  tenant is onboarded; the real id only through ``streams dlq-resolve`` (audited);
* ``key``: the record key's shape, the pseudonym of its subject and a keyed fingerprint;
* ``payload_size``, ``payload_fingerprint``, ``event_ref``: keyed fingerprints
  (HMAC with the DLQ key, ``streams.dlq.keys``) of the payload and event id, under
  key version ``fingerprint_key``;
* ``source``: topic, partition and offset of the original on ``events.raw``.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any, Callable, Collection, Iterable, Sequence

from streams.audit.chain import pseudonym as _pseudonym
from streams.errors import TenantFault
from streams.dlq.keys import EphemeralDlqKey, Fingerprinter
from streams.records import Rejected

DLQ_VERSION = 2

#: A record key of the expected shape: <tenant name>/<subject id>.
_KEY_SHAPE = re.compile(rb"([a-z][a-z0-9-]{0,62})/([A-Za-z0-9._:-]{1,128})")


class DlqSealer:
    """Turns a ``Rejected`` into its DLQ record: fingerprints with the DLQ key, subjects by pseudonym.

    ``pseudonyms(tenant, subject)`` is the audit trail's pseudonymizer; ``tenants`` the onboarded
    tenants (only theirs get pseudonyms: a tenant name a producer made up gets no secret);
    ``subjects`` (``streams.dlq.subjects.DlqSubjects``) keeps the way back for ``dlq-resolve``.
    """

    def __init__(self, keys: Fingerprinter, pseudonyms: Callable[[str, str], str],
                 tenants: Collection[str] | None = None, subjects: Any = None) -> None:
        self.keys = keys
        self.pseudonyms = pseudonyms
        self.tenants = tenants
        self.subjects = subjects

    def __repr__(self) -> str:
        return "DlqSealer(<keys hidden>)"

    @classmethod
    def ephemeral(cls) -> "DlqSealer":
        """Keys held in this process only: for tests and tools without Redis. Never unkeyed."""
        secret = os.urandom(32)
        return cls(EphemeralDlqKey(), lambda t, s: _pseudonym(t, s, secret))

    def _name(self, tenant: str, subject: str) -> str | None:
        """The subject's pseudonym; None when the tenant's pseudonym secret is damaged (a tenant
        fault): the record then names no subject, and the rest of the batch still goes out."""
        try:
            return self.pseudonyms(tenant, subject)
        except Exception as exc:
            if not isinstance(exc, TenantFault):
                raise
            return None

    def _onboarded(self, tenant: str, rej: Rejected) -> bool:
        if self.tenants is None:
            return tenant == rej.tenant  # set by the processor only for an onboarded tenant
        return tenant in self.tenants

    def document(self, rej: Rejected, now_ms: int | None = None,
                 remember: list[tuple[str, str, str]] | None = None) -> dict[str, Any]:
        fp = self.keys.fingerprint
        tenant = rej.tenant
        subject = None
        if tenant and rej.subject is not None:
            subject = self._name(tenant, rej.subject.value)
            if remember is not None and subject is not None:
                remember.append((tenant, subject, rej.subject.value))
        key: dict[str, Any] | None = None
        if rej.key is not None:
            raw = rej.key.value
            if not isinstance(raw, bytes):  # not what a Kafka client hands over: its type only
                key = {"shape": "other", "size": None, "fingerprint": None}
            else:
                m = _KEY_SHAPE.fullmatch(raw)
                key_tenant = m.group(1).decode() if m else None
                onboarded = key_tenant is not None and self._onboarded(key_tenant, rej)
                key = {"shape": "tenant/subject" if m else "other", "size": len(raw),
                       "tenant": key_tenant if onboarded else None, "subject": None,
                       "fingerprint": fp("key", tenant, raw)}
                if onboarded:
                    key_subject = m.group(2).decode()
                    key["subject"] = self._name(key_tenant, key_subject)
                    if remember is not None and key["subject"] is not None:
                        remember.append((key_tenant, key["subject"], key_subject))
                    if subject is None and key_tenant == tenant:
                        subject = key["subject"]
        payload = rej.payload.value if rej.payload is not None else None
        payload_fp = fp("payload", tenant, payload) if isinstance(payload, bytes) else None
        event_ref = fp("event_id", tenant, rej.event_id.encode()) if rej.event_id else None
        version = next((f.split(":", 1)[0] for f in (payload_fp, event_ref, key and key.get("fingerprint")) if f),
                       None)
        return {
            "v": DLQ_VERSION,
            "reason": rej.reason.value,
            "detail": rej.detail,
            "field": rej.field,
            "unknown_members": rej.unknown_members,
            "tenant": tenant,
            "subject": subject,
            "event_type": rej.event_type,
            "schema_fingerprint": rej.schema_fingerprint,
            "event_ref": event_ref,
            "source": {"topic": rej.source.topic, "partition": rej.source.partition,
                       "offset": rej.source.offset, "timestamp_ms": rej.source.timestamp_ms},
            "key": key,
            "payload_size": rej.payload_size,
            "payload_fingerprint": payload_fp,
            "fingerprint_key": version,
            "rejected_at_ms": now_ms if now_ms is not None else int(time.time() * 1000),
        }

    def encode(self, rej: Rejected, now_ms: int | None = None) -> bytes:
        return self.encode_batch([rej], now_ms)[0]

    def encode_batch(self, rejected: Sequence[Rejected], now_ms: int | None = None) -> list[bytes]:
        """Every record of a batch; the pseudonyms' way back is written first, in one round trip."""
        remember: list[tuple[str, str, str]] = []
        out = [json.dumps(self.document(r, now_ms, remember), separators=(",", ":")).encode() for r in rejected]
        if self.subjects is not None and remember:
            self.subjects.remember(remember)
        return out


_DEFAULT: DlqSealer | None = None


def default_sealer() -> DlqSealer:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = DlqSealer.ephemeral()
    return _DEFAULT


def dlq_document(rej: Rejected, now_ms: int | None = None, sealer: DlqSealer | None = None) -> dict[str, Any]:
    return (sealer or default_sealer()).document(rej, now_ms)


def encode_dlq(rej: Rejected, now_ms: int | None = None, sealer: DlqSealer | None = None) -> bytes:
    return (sealer or default_sealer()).encode(rej, now_ms)


def decode_dlq(value: bytes) -> dict[str, Any]:
    return json.loads(value)


def pseudonyms_in(docs: Iterable[dict[str, Any]]) -> set[str]:
    """Every subject pseudonym a set of DLQ records names (tests, erasure checks)."""
    out = set()
    for d in docs:
        if d.get("subject"):
            out.add(d["subject"])
        if d.get("key") and d["key"].get("subject"):
            out.add(d["key"]["subject"])
    return out
