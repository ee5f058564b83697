"""The OpenAPI 3.0 document of the data API, generated from the routes and parameter rules that validation uses.

Generated rather than hand-written so that a changed pattern or limit in
``streams.api.service`` changes the document too; a unit test checks that
every route and parameter appears with a schema. Served at ``GET /openapi.json``
without authentication (it describes the API, it holds no data).
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

from streams.api.service import (
    MAX_BODY_BYTES,
    MAX_REASON,
    MAX_TOKEN_CHARS,
    MIN_REASON,
    OPENAPI_PATH,
    ROUTES,
    SUBJECT,
    ParamSpec,
    Route,
)

_ERROR = {"$ref": "#/components/schemas/Error"}

_ERROR_TEXT = {
    400: "A parameter or the body breaks its rule; the message names it (never echoes the value).",
    401: "No API key, or one that is malformed, unknown or revoked.",
    403: "The key may not do this: another tenant's path (the same answer whether that tenant exists or not), "
         "an operator key on tenant data, or a role without this right.",
    404: "No such event.",
    405: "Method not allowed on this path.",
    413: f"The body is larger than {MAX_BODY_BYTES} bytes.",
    422: "Detokenize refused: not a token, not this subject's, or the subject is erased (audited).",
    503: "The worker is starting, or the store or the audit trail is unavailable; retry.",
}


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


def _parameter(p: ParamSpec) -> dict[str, Any]:
    return {"name": p.name, "in": p.location, "required": p.required, "description": p.description,
            "schema": param_schema(p)}


def _error(status: int) -> dict[str, Any]:
    out: dict[str, Any] = {"description": _ERROR_TEXT[status], "content": {"application/json": {"schema": _ERROR}}}
    if status == 401:
        out["headers"] = {"WWW-Authenticate": {"description": 'Bearer realm="streams"', "schema": {"type": "string"}}}
    return out


_OK_SCHEMA = {
    "subject_events": {"$ref": "#/components/schemas/SubjectEventsPage"},
    "events": {"$ref": "#/components/schemas/EventsPage"},
    "event": {"$ref": "#/components/schemas/EventResponse"},
    "counts": {"$ref": "#/components/schemas/Counts"},
    "detokenize": {"$ref": "#/components/schemas/Detokenized"},
}


def _operation(r: Route) -> dict[str, Any]:
    statuses = [400, 401, 403] + ([404] if r.name == "event" else []) \
        + ([413, 422] if r.name == "detokenize" else []) + [503]
    op: dict[str, Any] = {
        "operationId": r.name,
        "summary": r.summary,
        "parameters": [_parameter(p) for p in r.path_params + r.query_params],
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": _OK_SCHEMA[r.name]}}},
                      **{str(s): _error(s) for s in statuses}},
    }
    if r.name == "events":
        op["description"] = ("Without type: every event of the tenant in the time range. Paging: pass "
                             "paging.next_offset as offset for the next page (null on the last one).")
    if r.has_body:
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/DetokenizeRequest"}}}}
    return op


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
_PAGING = {
    "type": "object",
    "required": ["limit", "offset", "returned", "next_offset"],
    "properties": {"limit": {"type": "integer"}, "offset": {"type": "integer"}, "returned": {"type": "integer"},
                   "next_offset": {"type": "integer", "nullable": True}},
}


@lru_cache(maxsize=1)
def _document() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for r in ROUTES:
        paths.setdefault(r.template, {})[r.method.lower()] = _operation(r)
    paths[OPENAPI_PATH] = {"get": {
        "operationId": "openapi", "summary": "This document", "security": [],
        "responses": {"200": {"description": "The OpenAPI document",
                              "content": {"application/json": {"schema": {"type": "object"}}}}},
    }}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "streams tenant data API",
            "version": "1",
            "description": "Read a tenant's clean events from the store, and (detokenizer keys only) reveal a "
                           "token's value, audited. Each API key belongs to one tenant and one role "
                           "(reader, detokenizer; operator keys read no tenant data).",
        },
        "paths": paths,
        "security": [{"bearerAuth": []}, {"apiKeyHeader": []}],
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "stk_<key id>_<secret>"},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
            "schemas": {
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
            },
        },
    }


def openapi_document() -> dict[str, Any]:
    """A fresh copy of the document (callers may change theirs without affecting the next one)."""
    return copy.deepcopy(_document())
