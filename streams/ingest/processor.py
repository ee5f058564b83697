"""One raw record in, one outcome out: Accepted (for the tenant topic and store) or Rejected (for the DLQ).

Pure logic, no I/O, in two steps so the worker can fetch the subject keys of a
whole batch in one round trip between them:

1. ``validate``: size cap, decode, schema, tenant, key -> ``Validated`` or ``Rejected``;
2. ``finish``: the schema's privacy policy applied with the subject's key,
   lineage added, clean event encoded -> ``Accepted`` or ``Rejected``.

``process`` does both (tests, benchmark). None of them raises: an unexpected
error becomes a ``processing_error`` rejection, so one poison event cannot
stop the stream, and no rejection carries a value of the event in the clear:
the raw payload, record key and subject id a DLQ record needs (for keyed
fingerprints and a pseudonym, ``streams.dlq.record``) are held in ``Withheld``
boxes that neither ``repr`` nor ``str`` opens.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
import uuid
from typing import Any, Callable, Collection

from streams.dlq.reasons import Reason
from streams.privacy.policy import rules_of
from streams.privacy.transforms import PolicyApplier, SubjectCipher, TransformFailed
from streams.records import Accepted, Rejected, SourceRef, Validated, Withheld, withhold
from streams.schema import codec
from streams.schema.clean import LINEAGE_FIELD, derive_clean
from streams.schema.exceptions import DecodeError, SchemaViolation, UnknownSchemaError
from streams.schema.json_datum import MAX_POSITIONS, UnknownMembers, read_json
from streams.schema.registry import SchemaEntry, SchemaRegistry
from streams.tenancy.names import is_valid_tenant_name

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_SUBJECT_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _millis(value: Any) -> int:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return (value - _EPOCH) // dt.timedelta(milliseconds=1)  # exact; float timestamp() is not
    return int(value)


def _safe_uuid(value: Any) -> str | None:
    # fastavro decodes the uuid logical type to uuid.UUID; JSON gives a str.
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str):
        try:
            return str(uuid.UUID(value))
        except ValueError:
            return None
    return None


class EventProcessor:
    """Decides the fate of each raw record. Build once per worker; thread-safe (no state)."""

    def __init__(self, registry: SchemaRegistry, tenants: Collection[str], max_event_bytes: int,
                 sender_of: Callable[[str], str | None] | None = None) -> None:
        self.registry = registry
        # The tenant a source topic belongs to (its raw topic, which only its producer principal
        # may write), or None where the producer is trusted to name the tenant (events.raw).
        self.sender_of = sender_of
        # A live collection (streams.tenancy.registry.TenantDirectory) is kept as it is: tenants
        # onboarded at run time are then known without a restart.
        self.tenants = frozenset(tenants) if isinstance(tenants, (list, tuple, set)) else tenants
        self.max_event_bytes = max_event_bytes
        # Clean schemas and policies derived once, of each event type's latest version (every
        # event is read as that version, whichever it was written with); keyed by event type. An
        # invalid annotation raises PolicyError here, at start, not on the first event.
        self._clean: dict[str, SchemaEntry] = {e.event_type: derive_clean(e) for e in registry}
        self._policy: dict[str, PolicyApplier] = {e.event_type: PolicyApplier(rules_of(e.source))
                                                  for e in registry}
        # Subject keys for `process` when no key store is given (tests, benchmark).
        self._local_keys: dict[tuple[str, str], bytes] = {}

    def clean_entry(self, raw: SchemaEntry) -> SchemaEntry:
        """The clean schema events of ``raw``'s type are written with (its latest version's)."""
        return self._clean[raw.event_type]

    def process(self, key: bytes | None, value: bytes | None, source: SourceRef,
                now_ms: int | None = None,
                subject_key: Callable[[str, str], bytes] | None = None) -> Accepted | Rejected:
        """Both steps. ``subject_key(tenant, subject)`` defaults to keys kept in this object."""
        v = self.validate(key, value, source)
        if isinstance(v, Rejected):
            return v
        get = subject_key or self._local_key
        try:
            k = get(v.tenant, v.subject)
        except Exception as exc:
            return self.reject_validated(v, Reason.PROCESSING_ERROR, f"{type(exc).__name__} getting the subject key")
        return self.finish(v, SubjectCipher(k), now_ms)

    def _local_key(self, tenant: str, subject: str) -> bytes:
        k = self._local_keys.get((tenant, subject))
        if k is None:
            k = self._local_keys[(tenant, subject)] = os.urandom(64)
        return k

    def validate(self, key: bytes | None, value: bytes | None, source: SourceRef) -> Validated | Rejected:
        try:
            return self._validate(key, value, source)
        except Exception as exc:  # never let one event stop the stream
            detail = f"{type(exc).__name__} in validation"
            try:
                return self._reject(Reason.PROCESSING_ERROR, detail, key, value, source)
            except Exception:
                # The record itself broke _reject (a value without a length): it still becomes a
                # DLQ record, since an exception out of validate() would hold the whole batch back.
                return Rejected(reason=Reason.PROCESSING_ERROR, detail=detail, source=source, payload_size=0)

    def finish(self, v: Validated, cipher: SubjectCipher, now_ms: int | None = None) -> Accepted | Rejected:
        """Apply the privacy policy and encode. ``cipher`` holds the subject's key."""
        try:
            return self._finish(v, cipher, now_ms)
        except TransformFailed as exc:  # a poison event: the DLQ record names the field, never its value
            return self.reject_validated(v, Reason.PROCESSING_ERROR, str(exc), field=exc.field)
        except Exception as exc:
            return self.reject_validated(v, Reason.PROCESSING_ERROR, f"{type(exc).__name__} in the transform")

    def reject_validated(self, v: Validated, reason: Reason, detail: str, field: str | None = None) -> Rejected:
        return Rejected(reason=reason, detail=detail, source=v.source, payload_size=len(v.value),
                        payload=withhold(v.value), key=withhold(v.key), tenant=v.tenant,
                        event_id=v.event_id, event_type=v.raw_entry.event_type,
                        schema_fingerprint=v.writer_fingerprint, field=field, subject=Withheld(v.subject))

    def reject_accepted(self, a: Accepted, reason: Reason, detail: str) -> Rejected:
        """An event already transformed that cannot be delivered after all (its tenant was deleted
        meanwhile). The raw payload is gone by now (only its clean form is here): size 0, no
        fingerprint; the tenant is not named (it no longer exists)."""
        return Rejected(reason=reason, detail=detail, source=a.source, payload_size=0, payload=withhold(None),
                        key=withhold(None), event_id=a.event_id, event_type=a.event_type)

    def _reject(self, reason: Reason, detail: str, key: bytes | None, value: bytes | None,
                source: SourceRef, **extra: Any) -> Rejected:
        return Rejected(
            reason=reason, detail=detail, source=source,
            payload_size=len(value) if value is not None else 0,
            payload=withhold(value), key=withhold(key), **extra,
        )

    def _validate(self, key: bytes | None, value: bytes | None, source: SourceRef) -> Validated | Rejected:
        if value is not None and not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError("a record value must be bytes")  # a caller bug: processing_error, as any other
        if value is None or len(value) == 0:
            return self._reject(Reason.UNDECODABLE, "empty value", key, value, source)
        if len(value) > self.max_event_bytes:
            return self._reject(Reason.OVERSIZED, f"{len(value)} bytes > limit {self.max_event_bytes}",
                                key, value, source)
        try:
            if codec.is_single_object(value):
                writer, raw_entry, datum = codec.read(self.registry, value)
            elif value.lstrip()[:1] == b"{":
                writer, raw_entry, datum = read_json(self.registry, value)
            else:
                return self._reject(Reason.UNDECODABLE, "neither Avro single-object nor a JSON object",
                                    key, value, source)
        except UnknownSchemaError as exc:
            return self._reject(Reason.UNKNOWN_SCHEMA, str(exc), key, value, source)
        except DecodeError as exc:
            return self._reject(Reason.UNDECODABLE, str(exc), key, value, source)
        except UnknownMembers as exc:
            return self._reject(Reason.SCHEMA_VIOLATION, str(exc), key, value, source, field=exc.field,
                                unknown_members={"schema": exc.record, "count": len(exc.positions),
                                                 "positions": exc.positions[:MAX_POSITIONS],
                                                 "members": exc.members})
        except SchemaViolation as exc:
            return self._reject(Reason.SCHEMA_VIOLATION, str(exc), key, value, source, field=exc.field)

        ctx = {"event_type": raw_entry.event_type, "schema_fingerprint": writer.fingerprint_hex,
               "event_id": _safe_uuid(datum.get("event_id"))}
        tenant = datum.get("tenant_id") or ""
        subject = datum.get("subject_id") or ""
        if not tenant.strip():
            return self._reject(Reason.MISSING_TENANT, "tenant_id is empty", key, value, source, **ctx)
        sender = self.sender_of(source.topic) if self.sender_of is not None else None
        if sender is not None and tenant != sender:
            # A producer claims another tenant's events: the broker let it write only its own
            # raw topic, so the topic, not the payload, says who sent it.
            return self._reject(Reason.TENANT_MISMATCH, "tenant_id is not the tenant whose raw topic carried it",
                                key, value, source, **ctx)
        if not is_valid_tenant_name(tenant) or tenant not in self.tenants:
            return self._reject(Reason.UNKNOWN_TENANT, "tenant_id is not an onboarded tenant", key, value,
                                source, **ctx)
        ctx["tenant"] = tenant
        if not _SUBJECT_RE.fullmatch(subject):
            return self._reject(Reason.SCHEMA_VIOLATION, "field 'subject_id': expected 1-128 of [A-Za-z0-9._:-]",
                                key, value, source, field="subject_id", **ctx)
        ctx["subject"] = Withheld(subject)
        if ctx["event_id"] is None:
            return self._reject(Reason.SCHEMA_VIOLATION, "field 'event_id': expected string (uuid)",
                                key, value, source, field="event_id", **ctx)
        expected_key = f"{tenant}/{subject}".encode()
        if key != expected_key:
            return self._reject(Reason.KEY_MISMATCH, "record key must be '<tenant_id>/<subject_id>' of the event",
                                key, value, source, **ctx)

        return Validated(tenant=tenant, subject=subject, event_id=ctx["event_id"], raw_entry=raw_entry,
                         datum=datum, source=source, key=key, value=value, writer_fingerprint=writer.fingerprint_hex)

    def _finish(self, v: Validated, cipher: SubjectCipher, now_ms: int | None) -> Accepted:
        raw_entry, source = v.raw_entry, v.source
        event_time_ms = _millis(v.datum["event_time"])
        clean_entry = self._clean[raw_entry.event_type]
        clean_datum = self._policy[raw_entry.event_type].apply(v.datum, cipher)
        clean_datum["event_id"] = v.event_id
        clean_datum[LINEAGE_FIELD] = {
            "source_topic": source.topic,
            "source_partition": source.partition,
            "source_offset": source.offset,
            "raw_schema_fingerprint": v.writer_fingerprint,
            "policy_version": raw_entry.policy_version,
            "processed_at": now_ms if now_ms is not None else int(time.time() * 1000),
        }
        return Accepted(
            tenant=v.tenant, subject=v.subject, event_id=v.event_id, event_type=raw_entry.event_type,
            event_time_ms=event_time_ms, clean_entry=clean_entry, clean_datum=clean_datum,
            value=codec.encode(clean_entry, clean_datum), source=source,
        )
