"""The tenant data access API as pure request handling: no web framework, so every decision is unit-testable.

``DataApi.handle(method, route, params, query, headers, body)`` takes a
request the web layer already routed (``route`` is a route name of
``ROUTES``, ``params`` its path parameters) and returns an ``ApiResponse``.
The web layer (``streams.api.faust_views``) only converts to and from
aiohttp; the OpenAPI document (``streams.api.openapi``) is generated from
the same ``ROUTES`` and ``ParamSpec`` objects that drive validation here, so
documentation and behaviour cannot drift apart.

Order of the checks, and why
    1. route and method (404/405): nothing about keys or tenants is involved;
    2. authentication (401): an unauthenticated caller learns nothing else,
       not even whether its path parameters are well-formed;
    3. the tenant path parameter (400): it must be a tenant *name* before it
       can be compared or audited;
    4. authorization (403): operator keys read no tenant data; a tenant's key
       only its own tenant, and the answer for another tenant is the same
       whether that tenant exists, is onboarded or has the data (existence is
       never looked up before this point); the role must allow the route;
    5. every other parameter and the body (400), before anything reaches Redis:
       strict patterns (no glob characters, braces, control characters, ``..``),
       bounded lengths and integer ranges;
    6. the query.

Privacy requests (``/v1/tenants/{tenant}/privacy-requests``) are filed by a
tenant's ``privacy`` key for its own tenant only (the same 403 as every other
tenant route for another tenant's key; reader and detokenizer keys get 403 too,
audited). The request is validated like ``streams privacy file`` validates it,
audited (``privacy.request_filed``, the subject as a pseudonym) and only then
published to the requests topic with the key as actor (``api:<key id>``, the
receipt's ``filed_by``); the receipt is read back with the same key.

``/metrics`` (Prometheus text; it names every tenant and its volume) is not a
route of this API but is authorized here too (``authorize_metrics``): operator
keys only, denials audited like the routes'.

The tenant control routes (``/v1/tenants``, ``/v1/tenants/{tenant}``,
``.../rotate-credentials``) are for operator keys only: after authentication
the role is checked (403 for any other key, audited, whatever the path or
body holds), then the path, the query and the body are validated, and only
then does ``streams.api.control`` call the tenant service (the same one as
``streams tenants``), which audits each change with the key as actor.

Floods are bounded (issue 9; ``streams.api.limits``). Before a request
reaches any of the above, ``admit`` (no I/O; the web layer calls it in its
event loop) answers 429 with ``Retry-After`` when the key id's bucket
(every request), the key id's denial bucket or, for a request without a
recently authenticated key, the client address's denial bucket is empty.
Denials (401, 403, 429) are audited as ``api.denied`` records aggregated per
window (``DenialAudit``): one record per (key id, or the client's network
without a key; tenant asked for; route; status; why) with its ``count``,
appended by a background flush, never on the request path, so a flood adds
a bounded number of records (the audit topic is kept forever). Audit records
never hold a token, a full client address or a subject id (a subject appears
only as the pseudonym of the caller's own tenant).

Error bodies are ``{"error": {"code": ..., "message": ...}}``; messages name
the parameter and the rule, never echo the value sent (it may be personal
data or an injection attempt).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import dataclasses
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, AbstractSet, Any, Callable, Iterable, Mapping, Protocol

import redis

from streams.api.api_keys import ApiKeyStore, Principal, Role, key_id_of
from streams.api.limits import ApiLimiter, Denial, DenialAudit, address_for_audit, retry_after
from streams.audit.exceptions import AuditError
from streams.consent.exceptions import InvalidRequest
from streams.consent.requests import PURPOSES, PrivacyRequest, RequestType, new_request
from streams.privacy.detokenize import MAX_REASON, DetokenizeRefused, Detokenizer
from streams.sinks.store import StoreReader
from streams.tenancy.names import is_valid_tenant_name

if TYPE_CHECKING:  # only for build_data_api's signature
    from streams.settings import Settings

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- limits

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# Offsets are bounded so offset + limit always fits Redis' 64-bit ranges (a larger one is a 400, not a 500).
MAX_OFFSET = 1_000_000_000
# Event times: ms since the epoch up to the end of year 9999 (exact in a Redis double score).
MAX_TIME_MS = 253_402_300_799_999
MAX_BODY_BYTES = 16 * 1024
MAX_TOKEN_CHARS = 4096
MIN_REASON = 3
MAX_REQUEST_REASON = 200  # streams.consent.requests' limit
PRIVACY_FIELDS = ("type", "subject", "purpose", "reason")
DEFAULT_DENIAL_AUDIT_WINDOW = 10.0
# The address of the request being handled (handle and authorize_metrics set it): who an unauthenticated denial is.
_CLIENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("streams_api_client", default=None)

# ---------------------------------------------------------------- responses


@dataclass(frozen=True)
class ApiResponse:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


# Responses hold tenant data (and detokenized values): never cache them anywhere.
_COMMON_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> ApiResponse:
    return ApiResponse(status, {"error": {"code": code, "message": message}}, {**_COMMON_HEADERS, **(headers or {})})


def ok(body: dict[str, Any], status: int = 200, headers: Mapping[str, str] | None = None) -> ApiResponse:
    return ApiResponse(status, body, {**_COMMON_HEADERS, **(headers or {})})


class ApiError(Exception):
    """Raised inside request handling; becomes an error response (its message is safe to show)."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.response = error_response(status, code, message, headers)


# ---------------------------------------------------------------- parameters


@dataclass(frozen=True)
class ParamSpec:
    """One path or query parameter: its rule, used for validation here and for the OpenAPI schema."""

    name: str
    location: str  # "path" | "query"
    kind: str  # "string" | "integer"
    description: str
    pattern: str | None = None  # anchored ^...$, ECMA-262 compatible (OpenAPI) and Python re
    min_length: int | None = None
    max_length: int | None = None
    minimum: int | None = None
    maximum: int | None = None
    default: int | None = None
    mandatory: bool = False  # a query parameter that must be given (path parameters always are)

    @property
    def required(self) -> bool:
        return self.location == "path" or self.mandatory

    def rule(self) -> str:
        if self.kind == "integer":
            return f"an integer from {self.minimum} to {self.maximum}"
        return f"{self.min_length}-{self.max_length} characters matching {self.pattern}"

    def parse(self, raw: str) -> Any:
        """The validated value of ``raw``; ApiError 400 naming the parameter and its rule otherwise."""
        where = "path parameter" if self.location == "path" else "query parameter"
        bad = ApiError(400, "invalid_parameter", f"{where} '{self.name}' must be {self.rule()}")
        if not isinstance(raw, str):
            raise bad
        if self.kind == "integer":
            # ASCII digits only: int() would also take ' 12', '1_000' and non-ASCII digits.
            if not _INT_RE.fullmatch(raw):
                raise bad
            value = int(raw)
            if not (self.minimum <= value <= self.maximum):  # type: ignore[operator]
                raise bad
            return value
        if not (self.min_length or 0) <= len(raw) <= (self.max_length or 0):
            raise bad  # the length first: no regex ever runs over a huge value
        if self.pattern and not re.fullmatch(self.pattern, raw):
            raise bad
        return raw


_INT_RE = re.compile(r"[0-9]{1,16}")

TENANT = ParamSpec(
    "tenant", "path", "string", "The tenant's name (the key must belong to it).",
    # The rule of streams.tenancy.names (checked there too, and a unit test keeps them equal).
    pattern=r"^[a-z][a-z0-9-]{0,62}$", min_length=1, max_length=63)
SUBJECT = ParamSpec(
    "subject", "path", "string",
    "The tenant's opaque subject id, as in the clean events' subject_id. Ids made only of dots are refused: "
    "'.' and '..' are path segments that clients and proxies rewrite.",
    # The ingest rule ([A-Za-z0-9._:-]{1,128}) with at least one character that is not a dot;
    # written without look-ahead so every OpenAPI tool can use it.
    pattern=r"^[A-Za-z0-9._:-]*[A-Za-z0-9_:-][A-Za-z0-9._:-]*$", min_length=1, max_length=128)
EVENT_ID = ParamSpec(
    "event_id", "path", "string", "The event's id (a UUID, any case).",
    pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
    min_length=36, max_length=36)
TYPE = ParamSpec(
    "type", "query", "string", "An event type such as customer_signup or order_placed.",
    pattern=r"^[a-z][a-z0-9_]{0,63}$", min_length=1, max_length=64)
LIMIT = ParamSpec("limit", "query", "integer", "Page size.", minimum=1, maximum=MAX_LIMIT, default=DEFAULT_LIMIT)
OFFSET = ParamSpec("offset", "query", "integer", "Events to skip (from the paging object's next_offset).",
                   minimum=0, maximum=MAX_OFFSET, default=0)
START = ParamSpec("start", "query", "integer", "Earliest event time, ms since the epoch (inclusive).",
                  minimum=0, maximum=MAX_TIME_MS)
END = ParamSpec("end", "query", "integer", "Latest event time, ms since the epoch (inclusive).",
                minimum=0, maximum=MAX_TIME_MS)
REQUEST_ID = ParamSpec(
    "request_id", "path", "string", "The privacy request's id, as the filing answered it.",
    pattern=r"^r-[0-9a-f]{32}$", min_length=34, max_length=34)
# The same rule on the control routes, where the key (an operator's) belongs to no tenant.
MANAGED_TENANT = dataclasses.replace(TENANT, description="The tenant's name.")
CONFIRM = ParamSpec(
    "confirm", "query", "string",
    "The tenant's name again: deleting erases every event, key and credential of the tenant, so a DELETE "
    "without this confirmation changes nothing.",
    pattern=TENANT.pattern, min_length=TENANT.min_length, max_length=TENANT.max_length, mandatory=True)


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    template: str  # aiohttp / OpenAPI style: /v1/tenants/{tenant}/events
    summary: str
    path_params: tuple[ParamSpec, ...]
    query_params: tuple[ParamSpec, ...] = ()
    roles: frozenset[Role] = frozenset({Role.READER, Role.DETOKENIZER})
    has_body: bool = False
    control: bool = False  # a tenant control route (operator keys; streams.api.control)


_OPERATOR = frozenset({Role.OPERATOR})
_PRIVACY = frozenset({Role.PRIVACY})


ROUTES: tuple[Route, ...] = (
    Route("subject_events", "GET", "/v1/tenants/{tenant}/subjects/{subject}/events",
          "Events of one subject, oldest first", (TENANT, SUBJECT), (LIMIT, OFFSET)),
    Route("events", "GET", "/v1/tenants/{tenant}/events",
          "Events by type and/or time range, oldest first", (TENANT,), (TYPE, START, END, LIMIT, OFFSET)),
    Route("event", "GET", "/v1/tenants/{tenant}/events/{event_id}", "One event", (TENANT, EVENT_ID)),
    Route("counts", "GET", "/v1/tenants/{tenant}/counts", "How many events (of a type) the store holds",
          (TENANT,), (TYPE,)),
    Route("detokenize", "POST", "/v1/tenants/{tenant}/detokenize",
          "The value behind a token of one subject; audited; detokenizer keys only", (TENANT,),
          roles=frozenset({Role.DETOKENIZER}), has_body=True),
    Route("privacy_request", "POST", "/v1/tenants/{tenant}/privacy-requests",
          "File a privacy request (opt-out, opt-in, erasure, consent) for one of the tenant's subjects; audited; "
          "privacy keys only", (TENANT,), roles=_PRIVACY, has_body=True),
    Route("privacy_request_status", "GET", "/v1/tenants/{tenant}/privacy-requests/{request_id}",
          "The receipt of a privacy request of the tenant; privacy keys only", (TENANT, REQUEST_ID), roles=_PRIVACY),
    # The control plane: what `streams tenants` does, for operator keys only.
    Route("tenants_create", "POST", "/v1/tenants",
          "Onboard a tenant (idempotent: 201 when created, 200 when it existed); new credentials are shown once",
          (), roles=_OPERATOR, has_body=True, control=True),
    Route("tenants_list", "GET", "/v1/tenants", "The onboarded tenants", (), roles=_OPERATOR, control=True),
    Route("tenant_describe", "GET", "/v1/tenants/{tenant}", "What exists of one tenant (never secrets)",
          (MANAGED_TENANT,), roles=_OPERATOR, control=True),
    Route("tenant_rotate_credentials", "POST", "/v1/tenants/{tenant}/rotate-credentials",
          "New Kafka and Redis passwords and API keys (same roles); the old ones stop working; shown once",
          (MANAGED_TENANT,), roles=_OPERATOR, control=True),
    Route("tenant_delete", "DELETE", "/v1/tenants/{tenant}",
          "Delete a tenant: shred its keys, revoke its credentials, delete its topics and store; a receipt",
          (MANAGED_TENANT,), (CONFIRM,), roles=_OPERATOR, control=True),
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


# ---------------------------------------------------------------- the API


class AuditSink(Protocol):
    """What the API needs of ``streams.audit.log.AuditLog``."""

    def append(self, action: str, tenant: str | None, subject_pseudonym: str | None, reason: str,
               details: Mapping[str, Any] | None = None, *, actor: str | None = None) -> Any: ...


class RequestFiler(Protocol):
    """Publishes a privacy request to the requests topic; returns once the broker acknowledged it, raises
    otherwise (``streams.api.service.KafkaRequestFiler``)."""

    def file(self, request: PrivacyRequest) -> None: ...


class TenantControlPart(Protocol):
    """What the operator routes need (``streams.api.control.TenantControl``)."""

    def handle(self, route: str, actor: str, tenant: str | None, query: Mapping[str, Any],
               body: bytes) -> ApiResponse: ...


Query = Mapping[str, str] | Iterable[tuple[str, str]]


class DataApi:
    """Routes' handling: authentication, authorization, validation, the store queries, detokenize; the
    tenant management routes after their checks go to ``control`` (``streams.api.control``).

    Synchronous and blocking (redis-py, the audit's acknowledged appends): the
    web layer runs ``handle`` in a thread. Thread-safe as far as its parts are
    (redis-py clients and ``AuditLog`` are).
    """

    def __init__(self, store: StoreReader, keys: ApiKeyStore, detokenizer: Detokenizer, audit: AuditSink,
                 pseudonym: Callable[[str, str], str], tenants: Callable[[], AbstractSet[str]],
                 control: TenantControlPart | None = None, *, filer: RequestFiler | None = None,
                 receipts: Callable[[str, str], dict[str, Any] | None] | None = None,
                 limits: ApiLimiter | None = None, denials: DenialAudit | None = None) -> None:
        # control None: the operator routes answer 503 (not enabled here) after authorization; filer or
        # receipts None: the privacy request routes answer 503 after authorization. limits None: no 429s.
        # denials None: one of the default window, flushed by flush_denials() (start_denial_audits() runs it
        # in the background).
        self._control = control
        self._filer = filer
        self._receipts = receipts
        self._store = store
        self._keys = keys
        self._detokenizer = detokenizer
        self._audit = audit
        self._pseudonym = pseudonym
        self._tenants = tenants
        self._limits = limits
        self._denials = denials or DenialAudit(audit, DEFAULT_DENIAL_AUDIT_WINDOW)

    def __repr__(self) -> str:
        return "DataApi()"

    # ------------------------------------------------------------ denials: limits and their audit

    def start_denial_audits(self) -> None:
        """Flush the aggregated denial records in the background, every window."""
        self._denials.start()

    def flush_denials(self) -> int:
        """Append the denial records counted so far (one per group); how many were written."""
        return self._denials.flush()

    def close(self) -> None:
        self._denials.close()

    def admit(self, route: str, params: Mapping[str, str], headers: Mapping[str, str],
              client: str | None) -> ApiResponse | None:
        """None if the request may be handled, else a 429 (``Retry-After``). In memory only: no Redis, no
        audit write (the refusal is counted for the aggregated denial record), so a flood costs little."""
        if self._limits is None:
            return None
        r = METRICS_ROUTE if route == METRICS_ROUTE.name else ROUTES_BY_NAME.get(route)
        if r is None:
            return None
        token = credentials(headers)
        key_id = key_id_of(token) if token else None
        refusal = self._limits.admit(key_id, client)
        if refusal is None:
            return None
        raw_tenant = params.get("tenant", "")
        # Without a key that authenticated the address is who: made-up key ids would each make a group of
        # their own (they are kept as a few samples of the group).
        tenant = raw_tenant if is_valid_tenant_name(raw_tenant) else None
        if refusal.by_address or key_id is None:
            self._denials.add(Denial(r.name, 429, refusal.reason, tenant, network=address_for_audit(client)),
                              unproven_key_id=key_id)
        else:
            self._denials.add(Denial(r.name, 429, refusal.reason, tenant, key_id))
        return error_response(429, "rate_limited", f"{refusal.reason}; retry after the time in Retry-After",
                              {"Retry-After": retry_after(refusal.retry_after_s)})

    def _after(self, r: Route, headers: Mapping[str, str], raw_tenant: str, client: str | None,
               resp: ApiResponse) -> ApiResponse:
        """Denials count against the caller's buckets; a 401 without a usable key is counted for the audit here
        (the others were, where they were decided)."""
        if resp.status not in (401, 403):
            return resp
        token = credentials(headers)
        key_id = key_id_of(token) if token else None
        if self._limits is not None:
            self._limits.denied(key_id, client, authenticated=resp.status == 403)  # 403s come after authentication
        if resp.status == 401 and key_id is None:
            self._denials.add(Denial(r.name, 401, "no API key" if token is None else "malformed API key",
                                     raw_tenant if is_valid_tenant_name(raw_tenant) else None,
                                     network=address_for_audit(client)))
        return resp

    # ------------------------------------------------------------ entry point

    def handle(self, method: str, route: str, params: Mapping[str, str], query: Query,
               headers: Mapping[str, str], body: bytes = b"", *, client: str | None = None) -> ApiResponse:
        """Answer one request (``client``: the caller's address, for the per-address limit). Never raises:
        unexpected failures become 500 without details. The web layer calls ``admit`` first."""
        r = ROUTES_BY_NAME.get(route)
        if r is None:
            return error_response(404, "not_found", f"no such route; the routes are described at {OPENAPI_PATH}")
        method = method.upper()
        if method != r.method and not (method == "HEAD" and r.method == "GET"):
            allow = r.method + (", HEAD" if r.method == "GET" else "")
            return error_response(405, "method_not_allowed", f"use {allow} on this path", {"Allow": allow})
        token = _CLIENT.set(client)
        try:
            return self._after(r, headers, params.get("tenant", ""), client,
                               self._handle_safely(r, params, query, headers, body))
        finally:
            _CLIENT.reset(token)

    def _handle_safely(self, r: Route, params: Mapping[str, str], query: Query, headers: Mapping[str, str],
                       body: bytes) -> ApiResponse:
        try:
            return self._handle(r, params, query, headers, body)
        except ApiError as exc:
            return exc.response
        except (redis.RedisError, OSError) as exc:
            log.warning("api %s: the store is unavailable (%s)", r.name, type(exc).__name__)
            return error_response(503, "unavailable", "the store is unavailable; retry later",
                                  {"Retry-After": "1"})
        except AuditError:
            # Only detokenize needs an acknowledged audit record before it answers: nothing was revealed.
            log.warning("api %s: the audit trail is unavailable", r.name)
            return error_response(503, "unavailable", "the audit trail is unavailable; nothing was revealed; "
                                  "retry later", {"Retry-After": "1"})
        except Exception as exc:  # a bug: answer without details (they could hold data), log the type only
            log.error("api %s: unexpected %s", r.name, type(exc).__name__)
            return error_response(500, "internal_error", "internal error")

    def _handle(self, r: Route, params: Mapping[str, str], query: Query, headers: Mapping[str, str],
                body: bytes) -> ApiResponse:
        raw_tenant = params.get("tenant", "")
        principal = self._authenticate(r, headers, raw_tenant)
        if r.control:
            return self._control_route(r, principal, raw_tenant, params, query, body)
        tenant = TENANT.parse(raw_tenant)
        if not is_valid_tenant_name(tenant):  # the rule's owner has the last word
            raise ApiError(400, "invalid_parameter", f"path parameter 'tenant' must be {TENANT.rule()}")
        self._authorize(r, principal, tenant, body)
        path = {p.name: p.parse(params.get(p.name, "")) for p in r.path_params if p is not TENANT}
        q = _parse_query(r, query)
        if r.name == "subject_events":
            return self._subject_events(tenant, path["subject"], q)
        if r.name == "events":
            return self._events(tenant, q)
        if r.name == "event":
            return self._event(tenant, path["event_id"].lower())  # stored ids are lowercase (str(UUID))
        if r.name == "counts":
            return ok({"tenant": tenant, "type": q.get("type"), "count": self._store.count(tenant, q.get("type"))})
        if r.name == "privacy_request":
            return self._file_privacy_request(tenant, principal, body)
        if r.name == "privacy_request_status":
            return self._privacy_request_status(tenant, path["request_id"])
        return self._detokenize(tenant, principal, body)

    def _control_route(self, r: Route, p: Principal, raw_tenant: str, params: Mapping[str, str], query: Query,
                       body: bytes) -> ApiResponse:
        # The role first: a tenant's key learns nothing about the control routes' rules, and nothing it
        # sends (path, query, body) is looked at.
        if p.role not in r.roles:
            self._deny_audit(r, 403, p.key_id, p, raw_tenant, f"role {p.role.value} may not call {r.name}")
            raise ApiError(403, "forbidden", "only operator keys may manage tenants")
        path = {s.name: s.parse(params.get(s.name, "")) for s in r.path_params}
        tenant = path.get("tenant")
        if tenant is not None and not is_valid_tenant_name(tenant):  # the rule's owner has the last word
            raise ApiError(400, "invalid_parameter", f"path parameter 'tenant' must be {TENANT.rule()}")
        q = _parse_query(r, query)
        if self._control is None:
            raise ApiError(503, "unavailable", "tenant management is not enabled on this server")
        return self._control.handle(r.name, f"api:{p.key_id}", tenant, q, body)

    # ------------------------------------------------------------ /metrics

    def authorize_metrics(self, headers: Mapping[str, str], client: str | None = None) -> ApiResponse | None:
        """None when the caller may read ``/metrics`` (an operator key), else the error to answer (401/403,
        audited like the routes' denials). The metrics name every tenant and its volume: no tenant key and
        no anonymous caller reads them."""
        token = _CLIENT.set(client)
        try:
            denied = self._authorize_metrics(headers)
        finally:
            _CLIENT.reset(token)
        return None if denied is None else self._after(METRICS_ROUTE, headers, "", client, denied)

    def _authorize_metrics(self, headers: Mapping[str, str]) -> ApiResponse | None:
        r = METRICS_ROUTE
        try:
            p = self._authenticate(r, headers, "")
            if p.role not in r.roles:
                self._deny_audit(r, 403, p.key_id, p, p.tenant or "", f"role {p.role.value} may not read metrics")
                raise ApiError(403, "forbidden", "only operator keys may read the metrics")
            return None
        except ApiError as exc:
            return exc.response
        except (redis.RedisError, OSError) as exc:
            log.warning("api metrics: the store is unavailable (%s)", type(exc).__name__)
            return error_response(503, "unavailable", "the store is unavailable; retry later", {"Retry-After": "1"})
        except Exception as exc:
            log.error("api metrics: unexpected %s", type(exc).__name__)
            return error_response(500, "internal_error", "internal error")

    # ------------------------------------------------------------ auth

    def _authenticate(self, r: Route, headers: Mapping[str, str], raw_tenant: str) -> Principal:
        token = credentials(headers)
        if token is None:
            raise ApiError(401, "unauthorized",
                           "an API key is required: 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                           {"WWW-Authenticate": 'Bearer realm="streams"'})
        invalid = ApiError(401, "unauthorized", "the API key is not valid (malformed, unknown or revoked)",
                           {"WWW-Authenticate": 'Bearer realm="streams", error="invalid_token"'})
        key_id = key_id_of(token)
        if key_id is None:
            raise invalid  # malformed: counted for the audit by the caller's network (handle's _after)
        principal = self._keys.authenticate(token)
        if principal is None:
            # Grouped by the caller's network, the key id one of the group's samples: anyone can make them up.
            self._denials.add(Denial(r.name, 401, "unknown or revoked API key",
                                     raw_tenant if is_valid_tenant_name(raw_tenant) else None,
                                     network=address_for_audit(_CLIENT.get())), unproven_key_id=key_id)
            raise invalid
        if self._limits is not None:
            self._limits.authenticated(key_id)  # not made up: its address's denials no longer hold it back
        return principal

    def _authorize(self, r: Route, p: Principal, tenant: str, body: bytes) -> None:
        if p.role is Role.OPERATOR:
            self._deny_audit(r, 403, p.key_id, p, tenant, "operator key on tenant data")
            raise ApiError(403, "forbidden", "operator keys may not read tenant data; use a key of the tenant")
        # One answer, whether the tenant exists or not: its existence is not looked up for another tenant's key.
        if p.tenant != tenant or tenant not in self._tenants():
            self._deny_audit(r, 403, p.key_id, p, tenant, "key of another tenant")
            raise ApiError(403, "forbidden", "this API key may not access this tenant")
        if p.role not in r.roles:
            who = self._own_subject_pseudonym(tenant, body) if r.has_body else None
            self._deny_audit(r, 403, p.key_id, p, tenant, f"role {p.role.value} may not call {r.name}", who)
            raise ApiError(403, "forbidden", f"this API key's role ({p.role.value}) may not call this route")

    def _own_subject_pseudonym(self, tenant: str, body: bytes) -> str | None:
        # Only for the caller's own, onboarded tenant (checked before): the subject of a refused
        # detokenize appears in the audit as a pseudonym, so the officer can see whose data was sought.
        try:
            obj = json.loads(body) if len(body) <= MAX_BODY_BYTES else None
            subject = SUBJECT.parse(obj["subject"]) if isinstance(obj, dict) else None
            return self._pseudonym(tenant, subject) if subject else None
        except Exception:  # best effort: the denial is audited without it
            return None

    def _deny_audit(self, r: Route, status: int, key_id: str | None, p: Principal | None, tenant: str,
                    why: str, subject_pseudonym: str | None = None) -> None:
        """Count a denied attempt for its aggregated audit record (``DenialAudit``: written by the background
        flush, one record per (who, what) and window, never here on the request path)."""
        log.debug("api %s denied (%d, key %s): %s", r.name, status, key_id, why)
        self._denials.add(Denial(r.name, status, why, tenant if is_valid_tenant_name(tenant or "") else None,
                                 key_id, p.role.value if p else None, p.tenant if p else None,
                                 subject=subject_pseudonym))

    # ------------------------------------------------------------ routes

    def _subject_events(self, tenant: str, subject: str, q: dict[str, Any]) -> ApiResponse:
        limit, offset = q["limit"], q["offset"]
        # One more than asked: whether a next page exists, without a second round trip.
        docs = self._store.by_subject(tenant, subject, limit + 1, offset)
        return ok({"tenant": tenant, "subject": subject, "events": docs[:limit], "paging": _paging(docs, limit, offset)})

    def _events(self, tenant: str, q: dict[str, Any]) -> ApiResponse:
        limit, offset, start, end, etype = q["limit"], q["offset"], q.get("start"), q.get("end"), q.get("type")
        if start is not None and end is not None and start > end:
            raise ApiError(400, "invalid_parameter", "query parameter 'start' must be <= 'end'")
        if etype:
            docs = self._store.by_type(tenant, etype, start, end, limit + 1, offset)
        else:
            docs = self._store.by_time(tenant, start, end, limit + 1, offset)
        return ok({"tenant": tenant, "filter": {"type": etype, "start": start, "end": end},
                   "events": docs[:limit], "paging": _paging(docs, limit, offset)})

    def _event(self, tenant: str, event_id: str) -> ApiResponse:
        doc = self._store.get(tenant, event_id)
        if doc is None:
            raise ApiError(404, "not_found", "no event with this id in this tenant's store")
        return ok({"tenant": tenant, "event": doc})

    def _file_privacy_request(self, tenant: str, p: Principal, body: bytes) -> ApiResponse:
        fields = parse_privacy_body(body)
        if self._filer is None:
            raise ApiError(503, "unavailable", "filing privacy requests is not enabled on this server")
        actor = f"api:{p.key_id}"
        try:
            req = new_request(fields["type"], tenant, fields["subject"], actor, fields["purpose"], fields["reason"])
        except InvalidRequest as exc:  # its messages name the rule, never the value
            raise ApiError(400, "invalid_body", str(exc)) from None
        pseudonym = self._pseudonym(tenant, req.subject)
        details = {"request_id": req.request_id, "type": req.type.value, "purpose": req.purpose, "key_id": p.key_id}
        # Audited first (acknowledged; an AuditError is a 503 and nothing was filed), then published.
        self._audit.append("privacy.request_filed", tenant, pseudonym, req.reason or "filed over the API", details,
                           actor=actor)
        try:
            self._filer.file(req)
        except Exception as exc:
            log.warning("api privacy_request: not acknowledged by the broker (%s)", type(exc).__name__)
            try:
                self._audit.append("privacy.request_not_filed", tenant, pseudonym,
                                   "the broker did not acknowledge the request", details, actor=actor)
            except Exception:
                log.warning("api privacy_request: the failure was not audited")
            raise ApiError(503, "unavailable", "the request was not acknowledged by the broker and is not filed; "
                                               "retry later", {"Retry-After": "2"}) from None
        location = f"/v1/tenants/{tenant}/privacy-requests/{req.request_id}"
        return ok({"tenant": tenant, "request_id": req.request_id, "type": req.type.value, "subject": req.subject,
                   "purpose": req.purpose, "filed_at_ms": req.filed_at_ms, "filed_by": actor, "status": "filed",
                   "receipt": location}, 202, {"Location": location})

    def _privacy_request_status(self, tenant: str, request_id: str) -> ApiResponse:
        if self._receipts is None:
            raise ApiError(503, "unavailable", "privacy requests are not enabled on this server")
        receipt = self._receipts(tenant, request_id)
        if receipt is None:
            raise ApiError(404, "not_found", "no receipt for this request id in this tenant: not applied yet, or "
                                             "unknown")
        return ok({"tenant": tenant, "receipt": receipt})

    def _detokenize(self, tenant: str, p: Principal, body: bytes) -> ApiResponse:
        req = parse_detokenize_body(body)
        try:
            value = self._detokenizer.detokenize(tenant, req["subject"], req["token"], f"api:{p.key_id}",
                                                 req["reason"])
        except DetokenizeRefused as exc:
            # The Detokenizer audited the refusal; its messages never hold the value or the token.
            raise ApiError(422, "detokenize_refused", str(exc)) from None
        return ok({"tenant": tenant, "subject": req["subject"], "value": value})


# ---------------------------------------------------------------- pure helpers


def credentials(headers: Mapping[str, str]) -> str | None:
    """The API key sent in ``Authorization: Bearer`` (preferred) or ``X-API-Key``; None if neither.

    An Authorization header of another scheme counts as no key. Header names
    are compared case-insensitively (HTTP), whatever mapping the caller passes.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    auth = lower.get("authorization")
    if auth is not None:
        scheme, _, rest = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and rest.strip():
            return rest.strip()
    key = lower.get("x-api-key")
    if key is not None and key.strip():
        return key.strip()
    return None


def _parse_query(r: Route, query: Query) -> dict[str, Any]:
    """Validated query values with defaults. Unknown or repeated parameters are 400, not ignored:
    a typo ('limt') must not silently return the default page."""
    pairs = list(query.items()) if isinstance(query, Mapping) else list(query)
    specs = {p.name: p for p in r.query_params}
    seen: set[str] = set()
    out: dict[str, Any] = {p.name: p.default for p in r.query_params if p.default is not None}
    for name, raw in pairs:
        spec = specs.get(name)
        if spec is None:
            allowed = ", ".join(specs) or "none"
            raise ApiError(400, "invalid_parameter", f"unknown query parameter; this route takes: {allowed}")
        if name in seen:
            raise ApiError(400, "invalid_parameter", f"query parameter '{name}' given more than once")
        seen.add(name)
        out[name] = spec.parse(raw)
    for spec in r.query_params:
        if spec.mandatory and spec.name not in seen:
            raise ApiError(400, "invalid_parameter", f"query parameter '{spec.name}' is required: {spec.description}")
    return out


def _paging(docs: list[dict[str, Any]], limit: int, offset: int) -> dict[str, Any]:
    return {"limit": limit, "offset": offset, "returned": min(len(docs), limit),
            "next_offset": offset + limit if len(docs) > limit else None}


def parse_detokenize_body(body: bytes) -> dict[str, str]:
    """``{"subject", "token", "reason"}`` validated; ApiError 400/413 saying what is wrong (no values)."""
    if len(body) > MAX_BODY_BYTES:
        raise ApiError(413, "payload_too_large", f"the body is limited to {MAX_BODY_BYTES} bytes")
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_body", 'the body must be a JSON object {"subject", "token", "reason"}') from None
    if not isinstance(obj, dict) or set(obj) != {"subject", "token", "reason"}:
        raise ApiError(400, "invalid_body", 'the body must be a JSON object with exactly "subject", "token" and '
                                            '"reason"')
    subject = obj["subject"]
    if not isinstance(subject, str):
        raise ApiError(400, "invalid_body", f"'subject' must be {SUBJECT.rule()}")
    try:
        SUBJECT.parse(subject)
    except ApiError:
        raise ApiError(400, "invalid_body", f"'subject' must be {SUBJECT.rule()}") from None
    token = obj["token"]
    if not isinstance(token, str) or not 1 <= len(token) <= MAX_TOKEN_CHARS:
        raise ApiError(400, "invalid_body", f"'token' must be a string of 1-{MAX_TOKEN_CHARS} characters")
    reason = obj["reason"]
    if (not isinstance(reason, str) or not MIN_REASON <= len(reason.strip()) <= MAX_REASON
            or any(ord(c) < 32 or ord(c) == 127 for c in reason)):
        # Control characters are refused: the reason is kept in the audit trail and shown in reports.
        raise ApiError(400, "invalid_body", f"'reason' must say why the value is needed: {MIN_REASON}-{MAX_REASON} "
                                            "characters, no control characters (kept in the audit trail; no "
                                            "personal data)")
    return {"subject": subject, "token": token, "reason": reason.strip()}


def parse_privacy_body(body: bytes) -> dict[str, Any]:
    """``{"type", "subject", "purpose"?, "reason"?}`` validated; ApiError 400/413 saying what is wrong (no values)."""
    if len(body) > MAX_BODY_BYTES:
        raise ApiError(413, "payload_too_large", f"the body is limited to {MAX_BODY_BYTES} bytes")
    types = ", ".join(t.value for t in RequestType)
    shape = (f'the body must be a JSON object {{"type": one of {types}, "subject": <subject id>, "purpose": '
             f'(grant and revoke only) one of {", ".join(PURPOSES)}, "reason": (optional)}}')
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "invalid_body", shape) from None
    if not isinstance(obj, dict) or "type" not in obj or "subject" not in obj:
        raise ApiError(400, "invalid_body", shape)
    if set(obj) - set(PRIVACY_FIELDS):
        raise ApiError(400, "invalid_body", f"unknown member in the body; the members are: {', '.join(PRIVACY_FIELDS)}")
    type_ = obj["type"]
    if not isinstance(type_, str) or type_ not in {t.value for t in RequestType}:
        raise ApiError(400, "invalid_body", f"'type' must be one of: {types}")
    subject = obj["subject"]
    try:
        SUBJECT.parse(subject)
    except ApiError:
        raise ApiError(400, "invalid_body", f"'subject' must be {SUBJECT.rule()}") from None
    purpose = obj.get("purpose")
    if purpose is not None and (not isinstance(purpose, str) or purpose not in PURPOSES):
        raise ApiError(400, "invalid_body", f"'purpose' must be one of: {', '.join(PURPOSES)}")
    reason = obj.get("reason", "")
    if (not isinstance(reason, str) or len(reason) > MAX_REQUEST_REASON
            or any(ord(c) < 32 or ord(c) == 127 for c in reason)):
        raise ApiError(400, "invalid_body", f"'reason' must be at most {MAX_REQUEST_REASON} characters, no control "
                                            "characters (kept in the audit trail; no personal data)")
    return {"type": type_, "subject": subject, "purpose": purpose, "reason": reason.strip()}


# ---------------------------------------------------------------- wiring


class KafkaRequestFiler:
    """Publishes privacy requests to the requests topic (acks=all), keyed ``tenant/subject`` like
    ``streams privacy file`` does; ``file`` returns once the broker acknowledged the record."""

    def __init__(self, config: Mapping[str, Any], topic: str, timeout: float = 15.0) -> None:
        from confluent_kafka import Producer

        self._topic, self._timeout = topic, timeout
        self._producer = Producer({**config, "acks": "all", "partitioner": "murmur2_random",
                                   "logger": logging.getLogger("streams.kafka.producer")})
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "KafkaRequestFiler()"

    def file(self, request: PrivacyRequest) -> None:
        done = threading.Event()
        errors: list[Any] = []

        def delivered(err: Any, _msg: Any) -> None:
            errors.append(err)
            done.set()

        with self._lock:  # one request in flight per worker: filings are rare, ordering stays simple
            self._producer.produce(self._topic, request.to_json(), request.key, on_delivery=delivered)
            self._producer.flush(self._timeout)
        if not done.is_set() or errors[0] is not None:
            raise RuntimeError("the privacy request was not acknowledged by the broker")


def build_data_api(settings: "Settings", audit: AuditSink, tenants: Callable[[], AbstractSet[str]],
                   on_tenants_changed: Callable[[], None] | None = None, control: bool = True) -> DataApi:
    """The worker's DataApi, from settings (blocking: loads the master key; run it off the event loop).

    Built like ``streams detokenize`` builds its parts; ``audit`` is the
    worker's AuditLog (records name the API key as actor, ``api:<key id>``).
    With ``control`` the operator routes work (``streams.api.control``: a
    Redis client and a Kafka AdminClient made here, shared by every call);
    ``on_tenants_changed`` is called after a tenant was created or deleted
    (the worker re-reads its tenant directory at once).
    """
    from streams.api.control import build_tenant_control
    from streams.privacy.keys import KeyStore, LocalKeyFileProvider
    from streams.privacy.pseudonyms import Pseudonymizer

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    provider = LocalKeyFileProvider(settings.master_key_file, create=False)  # the worker created it
    provider.load()
    pseudonyms = Pseudonymizer(client, provider)
    detokenizer = Detokenizer(KeyStore(client, provider), audit, pseudonyms)  # type: ignore[arg-type]
    store = StoreReader(redis.Redis.from_url(settings.redis_url, decode_responses=True, socket_timeout=5,
                                             socket_connect_timeout=5))
    tenant_control = build_tenant_control(settings, audit, provider, on_tenants_changed) if control else None
    from streams.consent.store import ConsentStore

    consent = ConsentStore(client)
    limits = ApiLimiter(settings.api_rate_per_key, settings.api_denied_rate_per_key, settings.api_rate_per_address)
    api = DataApi(store, ApiKeyStore(client), detokenizer, audit, pseudonyms, tenants, tenant_control,
                  filer=KafkaRequestFiler(settings.kafka(), settings.requests_topic), receipts=consent.receipt,
                  limits=limits, denials=DenialAudit(audit, settings.api_denial_audit_window))
    api.start_denial_audits()
    return api
