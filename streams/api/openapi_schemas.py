"""The OpenAPI document's component schemas: the bodies the API takes and answers.

Apart from ``streams.api.openapi`` (the paths, built from the route table)
because they are long literals; the rules inside them (lengths, patterns,
enums) come from the modules that enforce them, never copied by hand.
"""

from __future__ import annotations

import copy

from typing import Any

from streams.api.control import DEFAULT_ROLES
from streams.api.params import (
    MAX_REASON,
    MAX_REQUEST_REASON,
    MAX_TOKEN_CHARS,
    MIN_REASON,
    SUBJECT,
    TENANT,
    ParamSpec,
)
from streams.consent import request_types
from streams.consent.requests import PURPOSES
from streams.tenancy.api_key_admin import TENANT_KEY_ROLES
from streams.tenancy.registry import REGIMES


def param_schema(p: ParamSpec) -> dict[str, Any]:
    """The JSON schema of one parameter, with every constraint validation applies."""
    if p.kind == "integer":
        s: dict[str, Any] = {"type": "integer", "minimum": p.minimum, "maximum": p.maximum}
        if p.default is not None:
            s["default"] = p.default
        return s
    s = {"type": "string", "minLength": p.min_length, "maxLength": p.max_length}
    if p.pattern:
        s["pattern"] = p.pattern
    return s



_EVENT = {
    "type": "object",
    "description": "A clean event as the store holds it: personal data already tokenized, hashed, masked, "
                   "redacted or generalized by the tenant's policy.",
    "properties": {
        "event_id": {"type": "string"}, "event_type": {"type": "string"}, "tenant": {"type": "string"},
        "subject": {"type": "string"}, "event_time_ms": {"type": "integer"}, "schema": {"type": "string"},
        "event": {"type": "object", "additionalProperties": True},
    },
    "additionalProperties": True,
}
_STEP = {
    "type": "object", "required": ["step", "at_ms"], "additionalProperties": True,
    "description": "One step of the operation, when it ended, and what it found or did.",
    "properties": {"step": {"type": "string"}, "at_ms": {"type": "integer"}},
}
_API_KEY_META = {
    "type": "object", "required": ["key_id", "role"],
    "properties": {"key_id": {"type": "string"}, "tenant": {"type": "string", "nullable": True},
                   "role": {"type": "string"}, "label": {"type": "string"}, "created_at_ms": {"type": "integer"}},
}
_NEW_API_KEY = {
    "type": "object", "required": ["key_id", "role", "token"],
    "properties": {"key_id": {"type": "string"}, "role": {"type": "string", "enum": list(TENANT_KEY_ROLES)},
                   "token": {"type": "string", "description": "stk_<key id>_<secret>: shown once, stored hashed"}},
}
_CREDENTIALS = {
    "type": "object", "additionalProperties": True,
    "description": "Only what this call made, shown once: kafka (SCRAM user, password, mechanism; secure broker "
                   "only), redis (ACL user, password), api_keys.",
    "properties": {
        "kafka": {"type": "object", "additionalProperties": True},
        "redis": {"type": "object", "additionalProperties": True},
        "api_keys": {"type": "array", "items": _NEW_API_KEY},
    },
}
_TENANT_SUMMARY = {
    "type": "object", "required": ["tenant", "regime", "status", "created_at_ms"],
    "properties": {"tenant": {"type": "string"}, "regime": {"type": "string", "enum": list(REGIMES)},
                   "status": {"type": "string", "enum": ["active", "deleting"]},
                   "created_at_ms": {"type": "integer"}},
}
_PAGING = {
    "type": "object",
    "required": ["limit", "offset", "returned", "next_offset"],
    "properties": {"limit": {"type": "integer"}, "offset": {"type": "integer"}, "returned": {"type": "integer"},
                   "next_offset": {"type": "integer", "nullable": True}},
}

#: components.schemas of the document.
SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message"],
                                 "properties": {"code": {"type": "string"},
                                                "message": {"type": "string"}}}},
    },
    "Event": _EVENT,
    "EventResponse": {"type": "object", "required": ["tenant", "event"],
                      "properties": {"tenant": {"type": "string"},
                                     "event": {"$ref": "#/components/schemas/Event"}}},
    "SubjectEventsPage": {
        "type": "object", "required": ["tenant", "subject", "events", "paging"],
        "properties": {"tenant": {"type": "string"}, "subject": {"type": "string"},
                       "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                       "paging": _PAGING},
    },
    "EventsPage": {
        "type": "object", "required": ["tenant", "filter", "events", "paging"],
        "properties": {
            "tenant": {"type": "string"},
            "filter": {"type": "object", "properties": {
                "type": {"type": "string", "nullable": True},
                "start": {"type": "integer", "nullable": True},
                "end": {"type": "integer", "nullable": True}}},
            "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
            "paging": _PAGING,
        },
    },
    "Counts": {"type": "object", "required": ["tenant", "type", "count"],
               "properties": {"tenant": {"type": "string"}, "type": {"type": "string", "nullable": True},
                              "count": {"type": "integer", "minimum": 0}}},
    "DetokenizeRequest": {
        "type": "object", "required": ["subject", "token", "reason"], "additionalProperties": False,
        "properties": {
            "subject": {**param_schema(SUBJECT), "description": "The subject the token belongs to."},
            "token": {"type": "string", "minLength": 1, "maxLength": MAX_TOKEN_CHARS,
                      "description": "A tok.<kind>.<data> value from a clean event."},
            "reason": {"type": "string", "minLength": MIN_REASON, "maxLength": MAX_REASON,
                       "pattern": "^[^\\u0000-\\u001f\\u007f]*$",
                       "description": "Why the value is needed; kept in the audit trail (no personal "
                                      "data)."},
        },
    },
    "Detokenized": {"type": "object", "required": ["tenant", "subject", "value"],
                    "properties": {"tenant": {"type": "string"}, "subject": {"type": "string"},
                                   "value": {"type": "string"}}},
    "PrivacyRequest": {
        "type": "object", "required": ["type", "subject"], "additionalProperties": False,
        "properties": {
            "type": {"type": "string", "enum": list(request_types.names())},
            "subject": {**param_schema(SUBJECT), "description": "The tenant's own subject id."},
            "purpose": {"type": "string", "enum": list(PURPOSES), "nullable": True,
                        "description": "grant and revoke only (required there)."},
            "reason": {"type": "string", "maxLength": MAX_REQUEST_REASON,
                       "pattern": "^[^\\u0000-\\u001f\\u007f]*$",
                       "description": "Why (a ticket number); kept in the audit trail (no personal "
                                      "data)."},
        },
    },
    "PrivacyRequestFiled": {
        "type": "object",
        "required": ["tenant", "request_id", "type", "subject", "filed_at_ms", "filed_by", "status",
                     "receipt"],
        "properties": {
            "tenant": {"type": "string"}, "request_id": {"type": "string", "pattern": "^r-[0-9a-f]{32}$"},
            "type": {"type": "string", "enum": list(request_types.names())},
            "subject": {"type": "string"}, "purpose": {"type": "string", "nullable": True},
            "filed_at_ms": {"type": "integer"},
            "filed_by": {"type": "string", "description": "api:<key id> of the privacy key"},
            "status": {"type": "string", "enum": ["filed"]},
            "receipt": {"type": "string", "description": "The path of its receipt"},
        },
    },
    "PrivacyRequestReceipt": {
        "type": "object", "required": ["tenant", "receipt"],
        "properties": {"tenant": {"type": "string"},
                       "receipt": {"type": "object", "additionalProperties": True,
                                   "description": "request_id, type, status, filed_by, steps with "
                                                  "their times"}},
    },
    "TenantCreateRequest": {
        "type": "object", "required": ["name"], "additionalProperties": False,
        "properties": {
            "name": {**param_schema(TENANT), "description": "The tenant's name (it becomes part of "
                                                            "topic names, Redis keys and ACLs)."},
            "regime": {"type": "string", "enum": list(REGIMES), "default": REGIMES[0],
                       "description": "Consent regime; opt_in: nothing is processed before consent. "
                                      "Kept as it is when the tenant exists."},
            "roles": {"type": "array", "items": {"type": "string", "enum": list(TENANT_KEY_ROLES)},
                      "uniqueItems": True, "maxItems": len(TENANT_KEY_ROLES), "default": list(DEFAULT_ROLES),
                      "description": "Roles of the tenant's API keys, made when the tenant is "
                                     "onboarded (a repeated call makes none)."},
            "quota": {"type": "object", "additionalProperties": False, "minProperties": 1,
                      "properties": {
                          "produce": {"type": "integer", "nullable": True, "minimum": 1024,
                                      "description": "producer_byte_rate of producer-<t> (bytes/s)"},
                          "fetch": {"type": "integer", "nullable": True, "minimum": 1024,
                                    "description": "consumer_byte_rate of tenant-<t> (bytes/s)"},
                          "request": {"type": "number", "nullable": True, "minimum": 0,
                                      "exclusiveMinimum": True,
                                      "description": "request_percentage of both principals"}},
                      "description": "Kafka client quotas (secure broker), enforced by the broker; "
                                     "null removes a part; absent: quotas stay as they are "
                                     "(none by default)."},
        },
    },
    "TenantCreated": {
        "type": "object", "required": ["tenant", "status", "regime", "steps", "credentials"],
        "properties": {"tenant": {"type": "string"},
                       "status": {"type": "string", "enum": ["created", "exists"]},
                       "regime": {"type": "string", "enum": list(REGIMES)},
                       "steps": {"type": "array", "items": _STEP},
                       "credentials": _CREDENTIALS},
    },
    "TenantList": {"type": "object", "required": ["tenants"],
                   "properties": {"tenants": {"type": "array", "items": _TENANT_SUMMARY}}},
    "TenantDescription": {
        "type": "object", "additionalProperties": True,
        "required": ["tenant", "regime", "status", "created_at_ms", "topics", "tenant_key_version",
                     "api_keys", "redis_user"],
        "properties": {
            **_TENANT_SUMMARY["properties"],
            "topics": {"type": "object", "description": "topic -> partitions, or \"missing\"",
                       "additionalProperties": True},
            "tenant_key_version": {"type": "integer", "nullable": True},
            "api_keys": {"type": "array", "items": _API_KEY_META},
            "redis_user": {"type": "object", "additionalProperties": True},
            "kafka_user": {"type": "object", "additionalProperties": True,
                           "description": "Secure broker only: the SCRAM user and its ACLs."},
        },
    },
    "CredentialsRotated": {
        "type": "object", "required": ["tenant", "rotated_at_ms", "credentials"],
        "properties": {"tenant": {"type": "string"}, "rotated_at_ms": {"type": "integer"},
                       "credentials": _CREDENTIALS},
    },
    "DeletionReceipt": {
        "type": "object",
        "required": ["receipt_id", "type", "tenant", "requested_by", "started_at_ms", "completed_at_ms",
                     "status", "steps"],
        "properties": {
            "receipt_id": {"type": "string"}, "type": {"type": "string", "enum": ["tenant.delete"]},
            "tenant": {"type": "string"},
            "requested_by": {"type": "string", "description": "api:<key id> of the operator key"},
            "started_at_ms": {"type": "integer"}, "completed_at_ms": {"type": "integer"},
            "status": {"type": "string", "enum": ["done"]},
            "steps": {"type": "array", "items": _STEP},
        },
    },
}


def schemas() -> dict[str, Any]:
    """``SCHEMAS`` with the privacy request types registered now (``streams.consent.request_types``):
    a type a plugin registers after this module was imported is listed too."""
    out = copy.deepcopy(SCHEMAS)
    for name in ("PrivacyRequest", "PrivacyRequestFiled"):
        out[name]["properties"]["type"]["enum"] = list(request_types.names())
    return out
