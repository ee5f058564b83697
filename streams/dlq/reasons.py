"""The closed set of reasons an event goes to the DLQ. Documented in README.md."""

from __future__ import annotations

from enum import Enum


class Reason(str, Enum):
    #: The bytes are neither Avro single-object nor a JSON object, or the body is truncated/corrupt.
    UNDECODABLE = "undecodable"
    #: The writer schema's fingerprint (or a JSON event's ``schema`` name) is not in ``schemas/``.
    UNKNOWN_SCHEMA = "unknown_schema"
    #: The event does not satisfy its schema; ``field`` names where.
    SCHEMA_VIOLATION = "schema_violation"
    #: The event has an empty ``tenant_id``.
    MISSING_TENANT = "missing_tenant"
    #: ``tenant_id`` names a tenant that is not onboarded.
    UNKNOWN_TENANT = "unknown_tenant"
    #: The event's tenant cannot take it now: its topic is gone (deleted by hand, say). Set aside so
    #: the other tenants go on; ``streams_tenant_isolated_total`` counts it for an alert.
    TENANT_UNAVAILABLE = "tenant_unavailable"
    #: The event's tenant key, or its subject's key record, is damaged (bit rot, tampering) while the
    #: master key unwraps other records: set aside so the other tenants go on;
    #: ``streams_tenant_isolated_total`` counts it for an alert.
    KEY_ERROR = "key_error"
    #: The event came on tenant A's raw topic (only A's producer may write it) but names another tenant.
    TENANT_MISMATCH = "tenant_mismatch"
    #: The record is larger than ``STREAMS_MAX_EVENT_BYTES``; it is not decoded at all.
    OVERSIZED = "oversized"
    #: The record key is not ``<tenant_id>/<subject_id>`` of the event (co-partitioning needs it).
    KEY_MISMATCH = "key_mismatch"
    #: A transform raised on this event (a bug or a poison event); the stream goes on.
    PROCESSING_ERROR = "processing_error"
    #: A record on privacy.requests is not a valid request (or its key is not its tenant/subject).
    INVALID_REQUEST = "invalid_request"


REASON_DOCS: dict[Reason, str] = {
    Reason.UNDECODABLE: "neither Avro single-object nor a JSON object; or truncated/corrupt body",
    Reason.UNKNOWN_SCHEMA: "writer schema fingerprint or JSON 'schema' name not in schemas/",
    Reason.SCHEMA_VIOLATION: "event does not satisfy its schema; 'field' says where",
    Reason.MISSING_TENANT: "empty tenant_id",
    Reason.UNKNOWN_TENANT: "tenant_id is not an onboarded tenant",
    Reason.TENANT_UNAVAILABLE: "the tenant's topic is gone: its events are set aside, the others go on",
    Reason.KEY_ERROR: "the tenant's or the subject's key record is damaged: its events are set aside, the others go on",
    Reason.TENANT_MISMATCH: "event on tenant A's raw topic (A's producer only) names another tenant",
    Reason.OVERSIZED: "record larger than STREAMS_MAX_EVENT_BYTES; not decoded",
    Reason.KEY_MISMATCH: "record key is not '<tenant_id>/<subject_id>' of the event",
    Reason.PROCESSING_ERROR: "a transform raised on this event; the stream goes on",
    Reason.INVALID_REQUEST: "a privacy request that is malformed or keyed wrongly; nothing was changed",
}
