"""The tenant data access API as pure request handling, wired: no web framework, so every decision is unit-testable.

``DataApi.handle(method, route, params, query, headers, body)`` takes a
request the web layer already routed (``route`` is a route name of
``streams.api.routes.ROUTES``, ``params`` its path parameters) and returns an
``ApiResponse``. It runs the checks of ``streams.api.auth`` (in the order its
docstring gives, and why), validates the path and query by the route's
``ParamSpec``s (``streams.api.params``), then calls the route's handler from
the table: a ``DataHandlers`` method (``streams.api.handlers``), or for the
tenant control routes (operator keys) ``TenantControl`` (``streams.api.control``),
which calls the tenant service (the same one as ``streams tenants``).

``/metrics`` (Prometheus text; it names every tenant and its volume) is not a
route of this API but is authorized here too (``authorize_metrics``): operator
keys only, denials audited like the routes'.

``build_data_api`` makes the worker's ``DataApi`` and its parts from settings.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, AbstractSet, Any, Callable, Mapping

import redis
from confluent_kafka import Producer

from streams.api.api_keys import ApiKeyStore, Principal
from streams.api.auth import Gate, caller
from streams.api.control import build_tenant_control
from streams.api.handlers import Call, DataHandlers
from streams.api.limits import ApiLimiter, DenialAudit
from streams.api.params import TENANT, Query, parse_query
from streams.api.protocols import AuditSink, RequestFiler, TenantControlPart
from streams.api.responses import ApiError, ApiResponse, error_response
from streams.api.routes import METRICS_ROUTE, OPENAPI_PATH, ROUTES_BY_NAME, Route
from streams.audit.exceptions import AuditError
from streams.connections import KafkaTarget, Purpose, redis_client, request_producer_config
from streams.consent.requests import PrivacyRequest
from streams.consent.store import ConsentStore
from streams.privacy.detokenize import Detokenizer
from streams.privacy.keys import KeyStore, LocalKeyFileProvider
from streams.privacy.pseudonyms import Pseudonymizer
from streams.sinks.store import StoreReader
from streams.tenancy.names import is_valid_tenant_name

if TYPE_CHECKING:  # only for build_data_api's signature
    from streams.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_DENIAL_AUDIT_WINDOW = 10.0


class DataApi:
    """One request's path through the checks to its route's handler; the tenant management routes after their
    checks go to ``control`` (``streams.api.control``).

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
        self._denials = denials or DenialAudit(audit, DEFAULT_DENIAL_AUDIT_WINDOW)
        self._gate = Gate(keys, tenants, pseudonym, limits, self._denials)
        self._handlers = DataHandlers(store, detokenizer, audit, pseudonym, filer, receipts)

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
        """None if the request may be handled, else a 429 (``Retry-After``); no I/O (``Gate.admit``)."""
        return self._gate.admit(route, params, headers, client)

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
        with caller(client):
            return self._gate.after(r, headers, params.get("tenant", ""), client,
                                    self._handle_safely(r, params, query, headers, body))

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
        principal = self._gate.authenticate(r, headers, raw_tenant)
        if r.control:
            return self._control_route(r, principal, raw_tenant, params, query, body)
        tenant = TENANT.parse(raw_tenant)
        if not is_valid_tenant_name(tenant):  # the rule's owner has the last word
            raise ApiError(400, "invalid_parameter", f"path parameter 'tenant' must be {TENANT.rule()}")
        self._gate.authorize(r, principal, tenant, body)
        path = {p.name: p.parse(params.get(p.name, "")) for p in r.path_params if p is not TENANT}
        call = Call(tenant, principal, path, parse_query(r.query_params, query), body)
        if r.handler is None:  # every route of ROUTES has one (a unit test checks): a bug, a 500
            raise RuntimeError(f"route {r.name} has no handler")
        return r.handler(self._handlers, call)

    def _control_route(self, r: Route, p: Principal, raw_tenant: str, params: Mapping[str, str], query: Query,
                       body: bytes) -> ApiResponse:
        self._gate.authorize_control(r, p, raw_tenant)
        path = {s.name: s.parse(params.get(s.name, "")) for s in r.path_params}
        tenant = path.get("tenant")
        if tenant is not None and not is_valid_tenant_name(tenant):  # the rule's owner has the last word
            raise ApiError(400, "invalid_parameter", f"path parameter 'tenant' must be {TENANT.rule()}")
        q = parse_query(r.query_params, query)
        if self._control is None:
            raise ApiError(503, "unavailable", "tenant management is not enabled on this server")
        return self._control.handle(r.name, f"api:{p.key_id}", tenant, q, body)

    # ------------------------------------------------------------ /metrics

    def authorize_metrics(self, headers: Mapping[str, str], client: str | None = None) -> ApiResponse | None:
        """None when the caller may read ``/metrics`` (an operator key), else the error to answer (401/403,
        audited like the routes' denials). The metrics name every tenant and its volume: no tenant key and
        no anonymous caller reads them."""
        with caller(client):
            denied = self._authorize_metrics(headers)
        return None if denied is None else self._gate.after(METRICS_ROUTE, headers, "", client, denied)

    def _authorize_metrics(self, headers: Mapping[str, str]) -> ApiResponse | None:
        try:
            self._gate.authorize_metrics(headers)
            return None
        except ApiError as exc:
            return exc.response
        except (redis.RedisError, OSError) as exc:
            log.warning("api metrics: the store is unavailable (%s)", type(exc).__name__)
            return error_response(503, "unavailable", "the store is unavailable; retry later", {"Retry-After": "1"})
        except Exception as exc:
            log.error("api metrics: unexpected %s", type(exc).__name__)
            return error_response(500, "internal_error", "internal error")


# ---------------------------------------------------------------- wiring


class KafkaRequestFiler:
    """Publishes privacy requests to the requests topic (acks=all), keyed ``tenant/subject`` like
    ``streams privacy file`` does; ``file`` returns once the broker acknowledged the record."""

    def __init__(self, config: KafkaTarget, topic: str, timeout: float = 15.0) -> None:
        self._topic, self._timeout = topic, timeout
        self._producer = Producer(request_producer_config(config))
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
    client = redis_client(settings, Purpose.WORKER)
    provider = LocalKeyFileProvider(settings.master_key_file, create=False)  # the worker created it
    provider.load()
    pseudonyms = Pseudonymizer(client, provider)
    detokenizer = Detokenizer(KeyStore(client, provider), audit, pseudonyms)  # type: ignore[arg-type]
    store = StoreReader.from_settings(settings, Purpose.WORKER)
    tenant_control = build_tenant_control(settings, audit, provider, on_tenants_changed) if control else None
    consent = ConsentStore(client)
    limits = ApiLimiter(settings.api_rate_per_key, settings.api_denied_rate_per_key, settings.api_rate_per_address)
    api = DataApi(store, ApiKeyStore(client), detokenizer, audit, pseudonyms, tenants, tenant_control,
                  filer=KafkaRequestFiler(settings.kafka(), settings.requests_topic), receipts=consent.receipt,
                  limits=limits, denials=DenialAudit(audit, settings.api_denial_audit_window))
    api.start_denial_audits()
    return api
