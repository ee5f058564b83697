"""Who is calling and what it may do: the API key, the roles, the rate limits and the audit of denials.

Order of the checks, and why (``DataApi`` runs them in this order)
    1. route and method (404/405): nothing about keys or tenants is involved;
    2. authentication (401): an unauthenticated caller learns nothing else,
       not even whether its path parameters are well-formed;
    3. the tenant path parameter (400): it must be a tenant *name* before it
       can be compared or audited;
    4. authorization (403): operator keys read no tenant data; a tenant's key
       only its own tenant, and the answer for another tenant is the same
       whether that tenant exists, is onboarded or has the data (existence is
       never looked up before this point); the role must allow the route;
    5. every other parameter and the body (400), before anything reaches Redis;
    6. the query.

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
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
from typing import AbstractSet, Callable, Iterator, Mapping

from streams.api.api_keys import ApiKeyStore, Principal, Role, key_id_of
from streams.api.limits import ApiLimiter, Denial, DenialAudit, address_for_audit, retry_after
from streams.api.params import MAX_BODY_BYTES, SUBJECT
from streams.api.responses import ApiError, ApiResponse, error_response
from streams.api.routes import METRICS_ROUTE, ROUTES_BY_NAME, Route
from streams.tenancy.names import is_valid_tenant_name

log = logging.getLogger(__name__)

# The address of the request being handled (``caller`` sets it): who an unauthenticated denial is.
_CLIENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("streams_api_client", default=None)


@contextlib.contextmanager
def caller(client: str | None) -> Iterator[None]:
    """The caller's address for the checks made inside (the audit of an unknown key groups by it)."""
    token = _CLIENT.set(client)
    try:
        yield
    finally:
        _CLIENT.reset(token)


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


class Gate:
    """Authentication, authorization, rate limits and the counting of denials for their audit.

    ``limits`` None: no 429s. Denials go to ``denials`` (written by its
    background flush, never on the request path). Thread-safe as its parts are.
    """

    def __init__(self, keys: ApiKeyStore, tenants: Callable[[], AbstractSet[str]],
                 pseudonym: Callable[[str, str], str], limits: ApiLimiter | None, denials: DenialAudit) -> None:
        self._keys = keys
        self._tenants = tenants
        self._pseudonym = pseudonym
        self._limits = limits
        self._denials = denials

    def __repr__(self) -> str:
        return "Gate()"

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

    def after(self, r: Route, headers: Mapping[str, str], raw_tenant: str, client: str | None,
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

    def authenticate(self, r: Route, headers: Mapping[str, str], raw_tenant: str) -> Principal:
        """The key's principal; ApiError 401 (with ``WWW-Authenticate``) without a valid key."""
        token = credentials(headers)
        if token is None:
            raise ApiError(401, "unauthorized",
                           "an API key is required: 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                           {"WWW-Authenticate": 'Bearer realm="streams"'})
        invalid = ApiError(401, "unauthorized", "the API key is not valid (malformed, unknown or revoked)",
                           {"WWW-Authenticate": 'Bearer realm="streams", error="invalid_token"'})
        key_id = key_id_of(token)
        if key_id is None:
            raise invalid  # malformed: counted for the audit by the caller's network (after)
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

    def authorize(self, r: Route, p: Principal, tenant: str, body: bytes) -> None:
        """A tenant data route: the key of this (onboarded) tenant with a role of the route; ApiError 403."""
        if p.role is Role.OPERATOR:
            self.deny_audit(r, 403, p.key_id, p, tenant, "operator key on tenant data")
            raise ApiError(403, "forbidden", "operator keys may not read tenant data; use a key of the tenant")
        # One answer, whether the tenant exists or not: its existence is not looked up for another tenant's key.
        if p.tenant != tenant or tenant not in self._tenants():
            self.deny_audit(r, 403, p.key_id, p, tenant, "key of another tenant")
            raise ApiError(403, "forbidden", "this API key may not access this tenant")
        if p.role not in r.roles:
            who = self._own_subject_pseudonym(tenant, body) if r.has_body else None
            self.deny_audit(r, 403, p.key_id, p, tenant, f"role {p.role.value} may not call {r.name}", who)
            raise ApiError(403, "forbidden", f"this API key's role ({p.role.value}) may not call this route")

    def authorize_control(self, r: Route, p: Principal, raw_tenant: str) -> None:
        """A control route: the role only (ApiError 403), before anything the caller sent is looked at, so a
        tenant's key learns nothing about the control routes' rules."""
        if p.role not in r.roles:
            self.deny_audit(r, 403, p.key_id, p, raw_tenant, f"role {p.role.value} may not call {r.name}")
            raise ApiError(403, "forbidden", "only operator keys may manage tenants")

    def authorize_metrics(self, headers: Mapping[str, str]) -> None:
        """``/metrics``: an operator key (ApiError 401/403 otherwise, denials audited like the routes')."""
        r = METRICS_ROUTE
        p = self.authenticate(r, headers, "")
        if p.role not in r.roles:
            self.deny_audit(r, 403, p.key_id, p, p.tenant or "", f"role {p.role.value} may not read metrics")
            raise ApiError(403, "forbidden", "only operator keys may read the metrics")

    def _own_subject_pseudonym(self, tenant: str, body: bytes) -> str | None:
        # Only for the caller's own, onboarded tenant (checked before): the subject of a refused
        # detokenize appears in the audit as a pseudonym, so the officer can see whose data was sought.
        try:
            obj = json.loads(body) if len(body) <= MAX_BODY_BYTES else None
            subject = SUBJECT.parse(obj["subject"]) if isinstance(obj, dict) else None
            return self._pseudonym(tenant, subject) if subject else None
        except Exception:  # best effort: the denial is audited without it
            return None

    def deny_audit(self, r: Route, status: int, key_id: str | None, p: Principal | None, tenant: str,
                   why: str, subject_pseudonym: str | None = None) -> None:
        """Count a denied attempt for its aggregated audit record (``DenialAudit``: written by the background
        flush, one record per (who, what) and window, never here on the request path)."""
        log.debug("api %s denied (%d, key %s): %s", r.name, status, key_id, why)
        self._denials.add(Denial(r.name, status, why, tenant if is_valid_tenant_name(tenant or "") else None,
                                 key_id, p.role.value if p else None, p.tenant if p else None,
                                 subject=subject_pseudonym))
