"""The records passed between the pipeline's stages, and the identities they carry.

At the bottom of the import graph (with ``streams.errors`` and ``streams.settings``): every
stage (ingest, consent, dlq, sinks) imports these types from here and none from another
stage, so no stage depends on another one's module for a type. This module imports nothing of
``streams`` at run time; the schema entry and DLQ reason are named for annotations only.

Record keys of the tenant topics are ``<subject id>/<event id>``, partitioned by subject: one
key per event, so a compacted tenant topic keeps every event (compaction only merges records
with the same key) and an erasure removes exactly the subject's events with one tombstone per
event. Subject ids cannot contain ``/`` (the validator allows ``[A-Za-z0-9._:-]``), so the first
``/`` splits the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: never imported at run time
    from streams.dlq.reasons import Reason
    from streams.schema.registry import SchemaEntry

# Lowercase letters, digits and '-', starting with a letter: valid in a Kafka
# topic name, safe inside a Redis key pattern (no glob characters) and in an
# ACL prefix, and never confusable with the '/' that separates tenant/subject.
TENANT_NAME_PATTERN = r"[a-z][a-z0-9-]{0,62}"
_TENANT_RE = re.compile(TENANT_NAME_PATTERN)


def is_valid_tenant_name(name: str) -> bool:
    return bool(_TENANT_RE.fullmatch(name))


def tenant_name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid tenant name (the rule, and the name cut short), or None."""
    if is_valid_tenant_name(name):
        return None
    return f"invalid tenant name {name[:70]!r}: use 1-63 lowercase letters, digits or '-', starting with a letter"


def record_key(subject: str, event_id: str) -> bytes:
    return f"{subject}/{event_id}".encode()


def split_key(key: bytes) -> tuple[str, str]:
    """(subject, event id) of a tenant topic key."""
    subject, sep, event_id = key.decode().partition("/")
    if not sep or not subject or not event_id:
        raise ValueError("not a tenant topic key")
    return subject, event_id


@dataclass(frozen=True)
class SourceRef:
    """Where a raw record was read: enough to find it again (lineage, DLQ triage)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None


@dataclass(frozen=True)
class Validated:
    """A decoded, schema-valid event of a known tenant, not yet transformed (holds raw PII)."""

    tenant: str
    subject: str
    event_id: str
    raw_entry: SchemaEntry  # the latest version of the event's schema: ``datum`` follows it, its policy applies
    datum: dict[str, Any] = field(repr=False)
    source: SourceRef
    key: bytes | None
    value: bytes = field(repr=False)  # the raw record, for a DLQ record's size and hash if a later step rejects it
    #: The fingerprint (hex) of the schema version the producer wrote with, as on the wire.
    writer_fingerprint: str


@dataclass(frozen=True)
class Accepted:
    tenant: str
    subject: str
    event_id: str
    event_type: str
    event_time_ms: int
    clean_entry: SchemaEntry
    clean_datum: dict[str, Any]
    value: bytes  # clean datum, Avro single-object encoded
    source: SourceRef

    @property
    def key(self) -> bytes:
        """One key per event (compaction keeps every event; an erasure tombstones each)."""
        return record_key(self.subject, self.event_id)

    @property
    def partition_key(self) -> bytes:
        """Partitioned by subject: a subject's events stay in order on one partition."""
        return self.subject.encode()


@dataclass(frozen=True)
class Dropped:
    """A valid event not processed for want of consent: counted and audited, never delivered."""

    tenant: str
    event_id: str
    event_type: str
    reason: str  # streams.consent.state.DropReason value
    source: SourceRef


class Withheld:
    """Producer data a DLQ record is derived from but never shows: ``repr`` and ``str`` say nothing."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<withheld>"

    __str__ = __repr__


def withhold(value: Any) -> Withheld | None:
    if value is None:
        return None
    if isinstance(value, (bytearray, memoryview)):
        value = bytes(value)
    return Withheld(value)


@dataclass(frozen=True)
class Rejected:
    """A DLQ outcome. Every text here is safe to log: no field values, no payload, no producer-chosen name.

    ``payload``, ``key`` and ``subject`` hold the raw record value, the raw record key and the
    event's subject id (when the event was decoded and its tenant is onboarded), withheld: the
    DLQ record shows them only as keyed fingerprints and a pseudonym (``streams.dlq.record``).
    ``event_id`` is the event's id when it is a valid UUID (the DLQ record shows it fingerprinted).
    """

    reason: Reason
    detail: str
    source: SourceRef
    payload_size: int
    payload: Withheld | None = field(default=None, compare=False)
    key: Withheld | None = field(default=None, compare=False)
    subject: Withheld | None = field(default=None, compare=False)
    field: str | None = None
    tenant: str | None = None
    event_id: str | None = None
    event_type: str | None = None
    schema_fingerprint: str | None = None
    unknown_members: dict[str, Any] | None = None
