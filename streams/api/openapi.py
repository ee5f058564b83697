"""The OpenAPI 3.0 document of the data API, generated from the routes and parameter rules that validation uses.

Generated rather than hand-written so that a changed pattern or limit in
``streams.api.params`` or ``streams.api.routes`` changes the document too; a unit test checks that
every route and parameter appears with a schema. Served at ``GET /openapi.json``
without authentication (it describes the API, it holds no data).
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

from streams.api.api_keys import Role
from streams.api.control import CONTROL_CONCURRENCY
from streams.consent import request_types
from streams.api.openapi_schemas import param_schema, schemas
from streams.api.params import MAX_BODY_BYTES, ParamSpec
from streams.api.routes import METRICS_PATH, OPENAPI_PATH, ROUTES, Route

_ERROR = {"$ref": "#/components/schemas/Error"}

_ERROR_TEXT = {
    400: "A parameter or the body breaks its rule; the message names it (never echoes the value).",
    401: "No API key, or one that is malformed, unknown or revoked.",
    403: "The key may not do this: another tenant's path (the same answer whether that tenant exists or not), "
         "an operator key on tenant data, or a role without this right.",
    404: "No such event; no receipt (yet) for this privacy request.",
    405: "Method not allowed on this path.",
    413: f"The body is larger than {MAX_BODY_BYTES} bytes.",
    422: "Detokenize refused: not a token, not this subject's, or the subject is erased (audited).",
    429: "Rate limited, before anything was looked up: this key's requests per second, this key's denied "
         "requests, or (without a recently authenticated key) this address's denied requests are over their "
         "limit. Retry after Retry-After seconds. Counted in an aggregated api.denied audit record.",
    503: "The worker is starting, or the store, the audit trail or (filing a privacy request) the broker is "
         "unavailable; retry. A privacy request answered 503 is not filed.",
}

# The tenant control routes (operator keys) answer some statuses for their own reasons.
_CONTROL_ERROR_TEXT = {
    400: "The body, a parameter or the delete confirmation breaks its rule; the message names it (never echoes "
         "the value). Nothing was changed.",
    403: "Only operator keys may manage tenants: a tenant's key (reader, detokenizer) gets 403 whatever it sends "
         "(audited).",
    404: "No onboarded tenant of this name.",
    409: "The tenant is being deleted: repeat its DELETE to finish that first.",
    413: f"The body is larger than {MAX_BODY_BYTES} bytes.",
    502: "A step failed on the broker or Redis (the message names it); every step is idempotent: re-running the "
         "operation is safe.",
    503: "The worker is starting; Kafka, Redis or the audit trail is unavailable; tenant management is not enabled "
         f"on this server; or {CONTROL_CONCURRENCY} tenant operations are already running on it. Retry (see "
         "Retry-After); re-running is safe.",
}


def _parameter(p: ParamSpec) -> dict[str, Any]:
    return {"name": p.name, "in": p.location, "required": p.required, "description": p.description,
            "schema": param_schema(p)}


def _error(status: int, control: bool = False) -> dict[str, Any]:
    text = (_CONTROL_ERROR_TEXT.get(status) if control else None) or _ERROR_TEXT[status]
    out: dict[str, Any] = {"description": text, "content": {"application/json": {"schema": _ERROR}}}
    if status == 401:
        out["headers"] = {"WWW-Authenticate": {"description": 'Bearer realm="streams"', "schema": {"type": "string"}}}
    if status == 429:
        out["headers"] = {"Retry-After": {"description": "Seconds to wait before the next request (at least 1)",
                                          "schema": {"type": "integer", "minimum": 1}}}
    return out


_OK_SCHEMA = {
    "subject_events": {"$ref": "#/components/schemas/SubjectEventsPage"},
    "events": {"$ref": "#/components/schemas/EventsPage"},
    "event": {"$ref": "#/components/schemas/EventResponse"},
    "counts": {"$ref": "#/components/schemas/Counts"},
    "detokenize": {"$ref": "#/components/schemas/Detokenized"},
    "tenants_create": {"$ref": "#/components/schemas/TenantCreated"},
    "tenants_list": {"$ref": "#/components/schemas/TenantList"},
    "tenant_describe": {"$ref": "#/components/schemas/TenantDescription"},
    "tenant_rotate_credentials": {"$ref": "#/components/schemas/CredentialsRotated"},
    "tenant_delete": {"$ref": "#/components/schemas/DeletionReceipt"},
    "privacy_request": {"$ref": "#/components/schemas/PrivacyRequestFiled"},
    "privacy_request_status": {"$ref": "#/components/schemas/PrivacyRequestReceipt"},
}
_REQUEST_SCHEMA = {"detokenize": "DetokenizeRequest", "tenants_create": "TenantCreateRequest",
                   "privacy_request": "PrivacyRequest"}
# Success statuses other than 200.
_OK_STATUS = {"tenants_create": "201", "privacy_request": "202"}
# Error statuses beyond 400, 401, 403 and 503, per route.
_MORE_ERRORS = {
    "event": [404],
    "detokenize": [413, 422],
    "privacy_request": [413],
    "privacy_request_status": [404],
    "tenants_create": [409, 413, 502],
    "tenants_list": [],
    "tenant_describe": [404, 502],
    "tenant_rotate_credentials": [404, 502],
    "tenant_delete": [404, 502],
}
_DESCRIPTION = {
    "events": "Without type: every event of the tenant in the time range. Paging: pass paging.next_offset as "
              "offset for the next page (null on the last one).",
    "tenants_create": "Topics, Kafka SCRAM user and prefixed ACLs (secure broker), a Redis ACL user limited to the "
                      "tenant's keyspace, API keys of the given roles, the consent regime and the tenant key. "
                      "Credentials appear in the answer that onboards the tenant (201) only: store them. "
                      "Idempotent: a repeated call on an onboarded tenant repairs topics, ACLs and Redis rules, "
                      "answers 200 with status \"exists\" and makes and shows no credential (an operator never "
                      "gets a key to a tenant's data this way; new keys: `streams apikeys create --tenant`, or "
                      "rotate-credentials). Audited with the calling key as actor. Operator keys only.",
    "privacy_request": "For one of the tenant's own subjects: opt_out (stop all processing of its events), "
                       "opt_in (lift it), erase (delete everything now; later events are blocked until an opt-in), "
                       "erase_and_suppress (the same, for good), grant and revoke (consent for one purpose). "
                       "Validated, written to the audit trail (the subject as a pseudonym, the key as actor), then "
                       "published to the privacy requests topic; 202 once the broker acknowledged it. The worker "
                       "that owns the subject applies it (usually within a second); its receipt is then at the "
                       "Location. Privacy keys of this tenant only: a reader or detokenizer key, or another "
                       "tenant's key, gets 403 (audited) and nothing is filed.",
    "privacy_request_status": "The receipt the worker wrote when it applied the request: its steps with their "
                              "times. 404 while it is pending (or for an id this tenant never filed). Privacy keys "
                              "of this tenant only.",
    "tenants_list": "Names, regimes, statuses and creation times; never secrets. Operator keys only.",
    "tenant_describe": "Topics, tenant key version, API keys (metadata, never hashes), Redis and Kafka users. "
                       "Operator keys only.",
    "tenant_rotate_credentials": "The old Kafka and Redis passwords and API keys stop working at once. The new "
                                 "ones appear in this answer only. Audited. Operator keys only.",
    "tenant_delete": "Irreversible: shreds the tenant's keys (every token of it becomes unreadable), revokes its "
                     "credentials, deletes its topics and store and rewrites Redis' AOF; can take seconds. Needs "
                     "?confirm=<tenant>. Idempotent: a failed delete is finished by repeating it. Audited. "
                     "Operator keys only.",
}


def _operation(r: Route) -> dict[str, Any]:
    statuses = sorted([400, 401, 403, 429, 503] + _MORE_ERRORS.get(r.name, []))
    ok_status = _OK_STATUS.get(r.name, "200")
    content = {"application/json": {"schema": _OK_SCHEMA[r.name]}}
    text = {"200": "OK", "201": "Created", "202": "Accepted: filed (the broker acknowledged it)"}[ok_status]
    responses: dict[str, Any] = {ok_status: {"description": text, "content": content}}
    if r.name == "privacy_request":
        responses["202"]["headers"] = {"Location": {"description": "The request's receipt",
                                                    "schema": {"type": "string"}}}
    if r.name == "tenants_create":
        responses["201"]["headers"] = {"Location": {"description": "The tenant's path", "schema": {"type": "string"}}}
        responses["200"] = {"description": "The tenant existed: what was missing was completed", "content": content}
    op: dict[str, Any] = {
        "operationId": r.name,
        "summary": r.summary,
        "tags": ["tenant management (operator keys)" if r.control else
                 "privacy requests (privacy keys)" if r.roles == frozenset({Role.PRIVACY}) else "tenant data"],
        "parameters": [_parameter(p) for p in r.path_params + r.query_params],
        "responses": {**responses, **{str(s): _error(s, r.control) for s in statuses}},
    }
    if r.name in _DESCRIPTION:
        op["description"] = _DESCRIPTION[r.name]
    if r.has_body:
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{_REQUEST_SCHEMA[r.name]}"}}}}
    return op


@lru_cache(maxsize=4)
def _document(request_type_names: tuple[str, ...] = ()) -> dict[str, Any]:
    """Built once per set of registered request types (the key: a type registered later is listed)."""
    paths: dict[str, Any] = {}
    for r in ROUTES:
        paths.setdefault(r.template, {})[r.method.lower()] = _operation(r)
    paths[METRICS_PATH] = {"get": {
        "operationId": "metrics", "summary": "The worker's metrics in Prometheus text format; operator keys only",
        "description": "Events processed, delivered per tenant, DLQ per reason, sink retries. They name every "
                       "tenant and its volume: a tenant's key gets 403 and no key 401 (denials with a key are "
                       "audited).",
        "tags": ["operations (operator keys)"],
        "responses": {
            "200": {"description": "Prometheus text exposition format", "content": {"text/plain": {"schema": {
                "type": "string"}}}},
            **{str(s): _error(s) for s in (401, 403, 429, 503)},
        },
    }}
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
                           "(reader, detokenizer, privacy), or to the operators: operator keys read no tenant "
                           "data; they onboard, list, describe, rotate and delete tenants (/v1/tenants), audited, "
                           "and read /metrics. Privacy keys file their tenant's privacy requests (opt-out, opt-in, "
                           "erasure, consent) and read their receipts, audited; they read no events.",
        },
        "paths": paths,
        "security": [{"bearerAuth": []}, {"apiKeyHeader": []}],
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "stk_<key id>_<secret>"},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
            "schemas": schemas(),
        },
    }


def openapi_document() -> dict[str, Any]:
    """A fresh copy of the document (callers may change theirs without affecting the next one)."""
    return copy.deepcopy(_document(request_types.names()))
