"""The tenant control plane over HTTP: what ``streams tenants`` does, for operator API keys.

``DataApi`` (``streams.api.service``) authenticates the caller, lets only
operator keys through (403 for any other, audited) and validates the path and
query; ``TenantControl.handle`` then validates the body, checks the delete
confirmation, and runs the route's handler from the table
(``streams.api.control_handlers``) on a ``streams.tenancy.onboarding.TenantService``: the same
service as the CLI, so both enforce the same rules and write the same audit
records and receipts.

Actor
    A ``TenantService`` is made per call around parts built once (a Redis
    client, a Kafka AdminClient, the key store, the API key store), with the
    calling key as actor, ``api:<key id>``: it is the receipt's
    ``requested_by``, and the audit records of the call carry it as their
    actor (``ActorAudit`` passes it to the worker's ``AuditLog``).

Errors (bodies ``{"error": {"code", "message"}}``; messages never hold secrets)
    ====================================  =====  ===================================
    body or confirmation wrong            400    nothing was looked up or changed
    ``InvalidTenantName``                 400
    ``TenantNotFound``                    404
    ``OnboardingError``: tenant deleting  409    finish the delete first
    ``OnboardingError``, a failed step    502    its message; re-running is safe
    Kafka or Redis unreachable            503    ``Retry-After``; re-running is safe
    audit record not acknowledged         503    the change was made, not audited
    more than ``CONTROL_CONCURRENCY``     503    ``Retry-After``
    ====================================  =====  ===================================

At most ``CONTROL_CONCURRENCY`` calls run at once per process: a delete waits
for an AOF rewrite and can take seconds, and the API's threads are shared with
the data routes, which must keep answering.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING, Any, Callable, Mapping

import redis
from confluent_kafka import KafkaError, KafkaException

from streams.api.api_keys import ApiKeyStore
from streams.api.control_handlers import TenantServiceLike
from streams.api.params import MAX_BODY_BYTES, TENANT
from streams.api.protocols import AuditSink
from streams.api.responses import ApiError, ApiResponse
from streams.api.routes import ROUTES_BY_NAME
from streams.audit.exceptions import AuditError
from streams.connections import Purpose, admin_client, redis_client
from streams.ops.exceptions import TopicError
from streams.privacy.keys import KeyStore
from streams.tenancy.api_key_admin import TENANT_KEY_ROLES
from streams.tenancy.exceptions import InvalidTenantName, OnboardingError, QuotaUnsupported, TenantNotFound
from streams.tenancy.onboarding import TenantService
from streams.tenancy.quotas import quota_from_mapping
from streams.tenancy.registry import REGIMES, TenantRegistry

if TYPE_CHECKING:  # only for build_tenant_control's signature
    from streams.privacy.keys import KeyProvider
    from streams.settings import Settings

log = logging.getLogger(__name__)

CONTROL_CONCURRENCY = 2
DEFAULT_ROLES = ("reader",)
CREATE_FIELDS = ("name", "regime", "roles", "quota")

# librdkafka errors that mean "the broker cannot be reached (now)", not "the broker refused".
_KAFKA_UNREACHABLE = frozenset({
    KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE,
    KafkaError._MSG_TIMED_OUT, KafkaError.REQUEST_TIMED_OUT, KafkaError.NETWORK_EXCEPTION,
    KafkaError.LEADER_NOT_AVAILABLE, KafkaError.NOT_CONTROLLER,
})


# ---------------------------------------------------------------- pure parts


def parse_create_body(body: bytes) -> dict[str, Any]:
    """``{"name", "regime"?, "roles"?, "quota"?}`` validated, with defaults; ApiError 400/413 saying what is wrong.

    Messages name the field and the rule, never the value sent.
    """
    if len(body) > MAX_BODY_BYTES:
        raise ApiError(413, "payload_too_large", f"the body is limited to {MAX_BODY_BYTES} bytes")
    shape = ('the body must be a JSON object {"name": <tenant>, "regime": "opt_out"|"opt_in" (optional), '
             '"roles": ["reader", "detokenizer", "privacy"] (optional), '
             '"quota": {"produce": <bytes/s>, "fetch": <bytes/s>, "request": <percent>} (optional)}')
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_body", shape) from None
    if not isinstance(obj, dict) or "name" not in obj:
        raise ApiError(400, "invalid_body", shape)
    unknown = sorted(set(obj) - set(CREATE_FIELDS))
    if unknown:
        raise ApiError(400, "invalid_body", f"unknown member in the body; the members are: {', '.join(CREATE_FIELDS)}")
    name = obj["name"]
    try:
        name = TENANT.parse(name)
    except ApiError:
        raise ApiError(400, "invalid_body", f"'name' must be {TENANT.rule()}") from None
    regime = obj.get("regime", REGIMES[0])
    if not isinstance(regime, str) or regime not in REGIMES:
        raise ApiError(400, "invalid_body", f"'regime' must be one of: {', '.join(REGIMES)}")
    roles = obj.get("roles", list(DEFAULT_ROLES))
    if (not isinstance(roles, list) or not all(isinstance(x, str) and x in TENANT_KEY_ROLES for x in roles)
            or len(set(roles)) != len(roles)):
        raise ApiError(400, "invalid_body", f"'roles' must be a list of distinct roles from: {', '.join(TENANT_KEY_ROLES)} "
                                            "(operator keys belong to no tenant)")
    out: dict[str, Any] = {"name": name, "regime": regime, "roles": list(roles)}
    if "quota" in obj:
        if not isinstance(obj["quota"], dict):
            raise ApiError(400, "invalid_body", "'quota' must be an object with produce, fetch and/or request")
        try:
            out["quota"] = quota_from_mapping(obj["quota"])
        except OnboardingError as exc:  # names the part and the rule, never the value
            raise ApiError(400, "invalid_body", str(exc).replace("--quota", "'quota'")) from None
    return out


def check_confirmation(tenant: str, query: Mapping[str, Any]) -> None:
    """A delete goes ahead only with ``?confirm=<the tenant's name>``; ApiError 400 otherwise."""
    if query.get("confirm") != tenant:
        raise ApiError(400, "confirmation_required",
                       "deleting a tenant erases every event, key and credential of it: repeat the tenant's name "
                       "in the query, ?confirm=<tenant>; nothing was changed")


def kafka_unreachable(exc: BaseException) -> bool:
    """Whether a confluent-kafka error means the broker could not be reached (retry), not a refusal."""
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    if not isinstance(err, KafkaError):
        return False
    return err.code() in _KAFKA_UNREACHABLE or err.retriable()


def _unavailable(what: str) -> ApiError:
    return ApiError(503, "unavailable", f"{what} is unavailable; the operation may be partly done: retry later "
                                        "(re-running it is safe)", {"Retry-After": "2"})


def control_error(exc: Exception, tenant_status: Callable[[], str | None]) -> ApiError | None:
    """The answer for an error of a tenant service call; None for an unexpected one (a 500, type logged only).

    ``tenant_status()`` gives the tenant's registry status now (None if not
    registered): an ``OnboardingError`` of a tenant that is being deleted is a
    conflict (409), any other a failed step (502).
    """
    if isinstance(exc, InvalidTenantName):
        return ApiError(400, "invalid_parameter", f"the tenant name must be {TENANT.rule()}")
    if isinstance(exc, TenantNotFound):
        return ApiError(404, "not_found", "no onboarded tenant of this name")
    if isinstance(exc, QuotaUnsupported):  # checked before any step: nothing changed
        return ApiError(400, "invalid_body", str(exc))
    if isinstance(exc, OnboardingError):
        try:
            deleting = tenant_status() == "deleting"
        except Exception:  # the store just failed: the step's own message says more
            deleting = False
        if deleting:
            return ApiError(409, "conflict", "this tenant is being deleted: repeat its DELETE to finish that first")
        # The tenancy package's messages name the step and the broker's error, never a secret.
        return ApiError(502, "step_failed", f"{exc}; re-running the operation is safe")
    if isinstance(exc, AuditError):
        return ApiError(503, "audit_unavailable",
                        "the change was made but its audit record was not acknowledged (the audit trail is "
                        "unavailable); retry once it is back: re-running is safe. Credentials this call made were "
                        "not shown: rotate them then.", {"Retry-After": "2"})
    if isinstance(exc, KafkaException):
        if kafka_unreachable(exc):
            return _unavailable("the Kafka broker")
        return ApiError(502, "step_failed", "the Kafka broker refused a step; re-running the operation is safe")
    if isinstance(exc, TopicError):
        # Raised "from None" inside the handler of the broker's error: that error is still the context.
        cause = exc.__context__
        if isinstance(cause, KafkaException):
            if kafka_unreachable(cause):
                return _unavailable("the Kafka broker")
            return ApiError(502, "step_failed", "the Kafka broker refused a topic step; re-running the operation "
                                                "is safe")
        # Its own findings (partitions, leaders) name topics only.
        return ApiError(502, "step_failed", f"{exc}; re-running the operation is safe")
    if isinstance(exc, (redis.RedisError, OSError)):  # OSError: also a timed-out AOF rewrite
        return _unavailable("Redis")
    return None


class ActorAudit:
    """An AuditSink that records ``actor`` on every record it is given (the calling API key)."""

    def __init__(self, audit: AuditSink, actor: str) -> None:
        self._audit, self._actor = audit, actor

    def append(self, action: str, tenant: str | None, subject_pseudonym: str | None, reason: str,
               details: Mapping[str, Any] | None = None, *, actor: str | None = None) -> Any:
        return self._audit.append(action, tenant, subject_pseudonym, reason, details, actor=actor or self._actor)


# ---------------------------------------------------------------- the handler


class TenantControl:
    """Runs the operator routes. Thread-safe (its parts are); blocking: the web layer calls it in a thread.

    ``make_service(actor)`` gives a tenant service acting (and audited) as
    ``actor``; ``tenant_status(name)`` the registry status of a tenant or None;
    ``on_change()`` runs after a tenant was created or deleted (best effort).
    """

    def __init__(self, make_service: Callable[[str], TenantServiceLike], tenant_status: Callable[[str], str | None],
                 on_change: Callable[[], None] | None = None, max_concurrent: int = CONTROL_CONCURRENCY) -> None:
        self._make_service = make_service
        self._tenant_status = tenant_status
        self._on_change = on_change
        self._slots = threading.BoundedSemaphore(max_concurrent)

    def __repr__(self) -> str:
        return "TenantControl()"

    def handle(self, route: str, actor: str, tenant: str | None, query: Mapping[str, Any],
               body: bytes) -> ApiResponse:
        # Everything the caller sent is checked before any I/O.
        request = parse_create_body(body) if route == "tenants_create" else None
        if route == "tenant_delete":
            check_confirmation(tenant or "", query)
        name = request["name"] if request else tenant
        if not self._slots.acquire(blocking=False):
            raise ApiError(503, "busy", "other tenant operations are running on this server; retry shortly",
                           {"Retry-After": "5"})
        try:
            try:
                response = self._run(self._make_service(actor), route, name, request)
            except Exception as exc:
                answer = control_error(exc, lambda: self._tenant_status(name) if name else None)
                if answer is None:
                    raise  # DataApi.handle: 500, the type logged only
                log.warning("api %s by %s failed: %s (%d)", route, actor, type(exc).__name__,
                            answer.response.status)
                raise answer from None
        finally:
            self._slots.release()
        if route in ("tenants_create", "tenant_delete") and self._on_change is not None:
            try:
                self._on_change()
            except Exception as exc:  # the worker's periodic refresh catches up
                log.warning("api %s: refreshing the tenant directory failed (%s)", route, type(exc).__name__)
        return response

    def _run(self, svc: TenantServiceLike, route: str, name: str | None,
             request: dict[str, Any] | None) -> ApiResponse:
        """The route's handler from the table (``streams.api.control_handlers``)."""
        r = ROUTES_BY_NAME.get(route)
        if r is None or not r.control or r.handler is None:
            raise ApiError(404, "not_found", "no such route")
        return r.handler(svc, name, request)


# ---------------------------------------------------------------- wiring


def build_tenant_control(settings: "Settings", audit: AuditSink, provider: "KeyProvider",
                         on_change: Callable[[], None] | None = None) -> TenantControl:
    """The control part of the worker's API: its parts are made once (no connection is opened here),
    a ``TenantService`` per call. ``provider`` is the master key provider the worker loaded."""
    # The timeouts of build_service (the CLI's): a delete's unlinks and ACL SAVE can take a while.
    client = redis_client(settings, Purpose.ADMIN)
    admin = admin_client(settings)
    keys = KeyStore(client, provider)
    api_keys = ApiKeyStore(client)
    registry = TenantRegistry(client)

    def make_service(actor: str) -> TenantService:
        return TenantService(settings, client, admin, keys, api_keys, ActorAudit(audit, actor), actor)

    def tenant_status(name: str) -> str | None:
        record = registry.get(name)
        return record.status if record else None

    return TenantControl(make_service, tenant_status, on_change)
