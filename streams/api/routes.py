"""The API's route table: every route's path, method, roles and handler, in one place.

The web layer (``streams.api.faust_views``) mounts one aiohttp view per path of
``ROUTES``; ``DataApi`` (``streams.api.service``) checks the method, the key
and the roles of the route and calls its ``handler``; the OpenAPI document
(``streams.api.openapi``) is generated from the same table, and a unit test
checks that the document has exactly these routes. Adding a route: a line
here, a handler (``handlers`` or ``control_handlers``), its schemas in
``openapi``.

Handlers of tenant data routes are ``DataHandlers`` methods called with a
``Call``; handlers of control routes (``control=True``, operator keys) are
``control_handlers`` functions called by ``TenantControl`` with the tenant
service.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from streams.api import control_handlers as ctl
from streams.api.api_keys import Role
from streams.api.handlers import DataHandlers
from streams.api.params import (
    CONFIRM,
    END,
    EVENT_ID,
    LIMIT,
    MANAGED_TENANT,
    OFFSET,
    REQUEST_ID,
    START,
    SUBJECT,
    TENANT,
    TYPE,
    ParamSpec,
)
from streams.api.responses import ApiResponse, error_response


@dataclass(frozen=True)
class Route:
    """One route: what the caller sends, who may call it, and what answers it."""

    name: str
    method: str
    template: str  # aiohttp / OpenAPI style: /v1/tenants/{tenant}/events
    summary: str
    path_params: tuple[ParamSpec, ...]
    query_params: tuple[ParamSpec, ...] = ()
    roles: frozenset[Role] = frozenset({Role.READER, Role.DETOKENIZER})
    has_body: bool = False
    control: bool = False  # a tenant control route (operator keys; streams.api.control)
    # A DataHandlers method (data routes) or a control_handlers function (control routes); None: not
    # answered by DataApi.handle (/metrics).
    handler: Callable[..., ApiResponse] | None = None


_OPERATOR = frozenset({Role.OPERATOR})
_PRIVACY = frozenset({Role.PRIVACY})
_D = DataHandlers

ROUTES: tuple[Route, ...] = (
    Route("subject_events", "GET", "/v1/tenants/{tenant}/subjects/{subject}/events",
          "Events of one subject, oldest first", (TENANT, SUBJECT), (LIMIT, OFFSET),
          handler=_D.subject_events),
    Route("events", "GET", "/v1/tenants/{tenant}/events",
          "Events by type and/or time range, oldest first", (TENANT,), (TYPE, START, END, LIMIT, OFFSET),
          handler=_D.events),
    Route("event", "GET", "/v1/tenants/{tenant}/events/{event_id}", "One event", (TENANT, EVENT_ID),
          handler=_D.event),
    Route("counts", "GET", "/v1/tenants/{tenant}/counts", "How many events (of a type) the store holds",
          (TENANT,), (TYPE,), handler=_D.counts),
    Route("detokenize", "POST", "/v1/tenants/{tenant}/detokenize",
          "The value behind a token of one subject; audited; detokenizer keys only", (TENANT,),
          roles=frozenset({Role.DETOKENIZER}), has_body=True, handler=_D.detokenize),
    Route("privacy_request", "POST", "/v1/tenants/{tenant}/privacy-requests",
          "File a privacy request (opt-out, opt-in, erasure, consent) for one of the tenant's subjects; audited; "
          "privacy keys only", (TENANT,), roles=_PRIVACY, has_body=True, handler=_D.file_privacy_request),
    Route("privacy_request_status", "GET", "/v1/tenants/{tenant}/privacy-requests/{request_id}",
          "The receipt of a privacy request of the tenant; privacy keys only", (TENANT, REQUEST_ID), roles=_PRIVACY,
          handler=_D.privacy_request_status),
    # The control plane: what `streams tenants` does, for operator keys only.
    Route("tenants_create", "POST", "/v1/tenants",
          "Onboard a tenant (idempotent: 201 when created, 200 when it existed); new credentials are shown once",
          (), roles=_OPERATOR, has_body=True, control=True, handler=ctl.tenants_create),
    Route("tenants_list", "GET", "/v1/tenants", "The onboarded tenants", (), roles=_OPERATOR, control=True,
          handler=ctl.tenants_list),
    Route("tenant_describe", "GET", "/v1/tenants/{tenant}", "What exists of one tenant (never secrets)",
          (MANAGED_TENANT,), roles=_OPERATOR, control=True, handler=ctl.tenant_describe),
    Route("tenant_rotate_credentials", "POST", "/v1/tenants/{tenant}/rotate-credentials",
          "New Kafka and Redis passwords and API keys (same roles); the old ones stop working; shown once",
          (MANAGED_TENANT,), roles=_OPERATOR, control=True, handler=ctl.tenant_rotate_credentials),
    Route("tenant_delete", "DELETE", "/v1/tenants/{tenant}",
          "Delete a tenant: shred its keys, revoke its credentials, delete its topics and store; a receipt",
          (MANAGED_TENANT,), (CONFIRM,), roles=_OPERATOR, control=True, handler=ctl.tenant_delete),
)
ROUTES_BY_NAME = {r.name: r for r in ROUTES}
OPENAPI_PATH = "/openapi.json"
METRICS_PATH = "/metrics"
# Not served by DataApi (it answers Prometheus text); authorized by DataApi.authorize_metrics.
METRICS_ROUTE = Route("metrics", "GET", METRICS_PATH, "The worker's metrics (Prometheus text); operator keys only",
                      (), roles=_OPERATOR)


def _segments(path: str) -> list[str]:
    return path.strip("/").split("/") if path.strip("/") else []


def unmatched(method: str, path: str) -> ApiResponse:
    """The answer for a request no route took: 405 (with Allow) if a route has this path, else 404.

    Needs no state, so the web layer answers it even while the worker starts.
    """
    seg = _segments(path)
    allowed = sorted({r.method for r in ROUTES if _shape_matches(_segments(r.template), seg)})
    if allowed and method.upper() not in allowed:
        allow = ", ".join(allowed + (["HEAD"] if "GET" in allowed else []))
        return error_response(405, "method_not_allowed", f"use {allow} on this path", {"Allow": allow})
    return error_response(404, "not_found", f"no such route; the routes are described at {OPENAPI_PATH}")


def _shape_matches(template: list[str], seg: list[str]) -> bool:
    return len(template) == len(seg) and all(
        t.startswith("{") or t == s for t, s in zip(template, seg))
