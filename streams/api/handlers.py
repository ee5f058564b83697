"""The tenant data routes' handlers: the store queries, detokenize and the privacy requests.

Each handler runs only after ``DataApi`` authenticated the caller, checked the
tenant and the role and validated the path and query (``Call`` holds the
validated values); the route table (``streams.api.routes``) names the handler
of each route. Handlers validate their body, do the work and build the answer.

Privacy requests are validated like ``streams privacy file`` validates them,
audited (``privacy.request_filed``, the subject as a pseudonym) and only then
published to the requests topic with the key as actor (``api:<key id>``, the
receipt's ``filed_by``); the receipt is read back with the same key.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from streams.errors import TenantFault
from streams.api.api_keys import Principal
from streams.api.params import parse_detokenize_body, parse_privacy_body
from streams.api.protocols import AuditSink, RequestFiler
from streams.api.responses import ApiError, ApiResponse, ok
from streams.consent.exceptions import InvalidRequest
from streams.consent.requests import new_request
from streams.privacy.detokenize import DetokenizeRefused, Detokenizer
from streams.sinks.store import StoreReader

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Call:
    """One authorized request as a handler sees it: every value already validated."""

    tenant: str
    principal: Principal
    path: dict[str, Any]  # the path parameters other than the tenant
    query: dict[str, Any]  # with defaults
    body: bytes


def _paging(docs: list[dict[str, Any]], limit: int, offset: int) -> dict[str, Any]:
    return {"limit": limit, "offset": offset, "returned": min(len(docs), limit),
            "next_offset": offset + limit if len(docs) > limit else None}


class DataHandlers:
    """The data routes' work on the store, the detokenizer and the requests topic (blocking; thread-safe as
    its parts are). ``filer`` or ``receipts`` None: the privacy request routes answer 503."""

    def __init__(self, store: StoreReader, detokenizer: Detokenizer, audit: AuditSink,
                 pseudonym: Callable[[str, str], str], filer: RequestFiler | None = None,
                 receipts: Callable[[str, str], dict[str, Any] | None] | None = None) -> None:
        self._store = store
        self._detokenizer = detokenizer
        self._audit = audit
        self._pseudonym = pseudonym
        self._filer = filer
        self._receipts = receipts

    def __repr__(self) -> str:
        return "DataHandlers()"

    def subject_events(self, c: Call) -> ApiResponse:
        tenant, subject, limit, offset = c.tenant, c.path["subject"], c.query["limit"], c.query["offset"]
        # One more than asked: whether a next page exists, without a second round trip.
        docs = self._store.by_subject(tenant, subject, limit + 1, offset)
        return ok({"tenant": tenant, "subject": subject, "events": docs[:limit], "paging": _paging(docs, limit, offset)})

    def events(self, c: Call) -> ApiResponse:
        tenant, q = c.tenant, c.query
        limit, offset, start, end, etype = q["limit"], q["offset"], q.get("start"), q.get("end"), q.get("type")
        if start is not None and end is not None and start > end:
            raise ApiError(400, "invalid_parameter", "query parameter 'start' must be <= 'end'")
        if etype:
            docs = self._store.by_type(tenant, etype, start, end, limit + 1, offset)
        else:
            docs = self._store.by_time(tenant, start, end, limit + 1, offset)
        return ok({"tenant": tenant, "filter": {"type": etype, "start": start, "end": end},
                   "events": docs[:limit], "paging": _paging(docs, limit, offset)})

    def event(self, c: Call) -> ApiResponse:
        doc = self._store.get(c.tenant, c.path["event_id"].lower())  # stored ids are lowercase (str(UUID))
        if doc is None:
            raise ApiError(404, "not_found", "no event with this id in this tenant's store")
        return ok({"tenant": c.tenant, "event": doc})

    def counts(self, c: Call) -> ApiResponse:
        etype = c.query.get("type")
        return ok({"tenant": c.tenant, "type": etype, "count": self._store.count(c.tenant, etype)})

    def file_privacy_request(self, c: Call) -> ApiResponse:
        tenant, p = c.tenant, c.principal
        fields = parse_privacy_body(c.body)
        if self._filer is None:
            raise ApiError(503, "unavailable", "filing privacy requests is not enabled on this server")
        actor = f"api:{p.key_id}"
        try:
            req = new_request(fields["type"], tenant, fields["subject"], actor, fields["purpose"], fields["reason"])
        except InvalidRequest as exc:  # its messages name the rule, never the value
            raise ApiError(400, "invalid_body", str(exc)) from None
        details = {"request_id": req.request_id, "type": req.type.value, "purpose": req.purpose, "key_id": p.key_id}
        try:
            pseudonym: str | None = self._pseudonym(tenant, req.subject)
        except Exception as exc:
            if not isinstance(exc, TenantFault):
                raise
            # The tenant's pseudonym secret is damaged: an erasure is still filed (the worker parks
            # it until the tenant is repaired, streams.erasure.parking); the audit names no subject.
            pseudonym = None
            details["subject_named"] = "no: the tenant's pseudonym secret is damaged"
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

    def privacy_request_status(self, c: Call) -> ApiResponse:
        if self._receipts is None:
            raise ApiError(503, "unavailable", "privacy requests are not enabled on this server")
        receipt = self._receipts(c.tenant, c.path["request_id"])
        if receipt is None:
            raise ApiError(404, "not_found", "no receipt for this request id in this tenant: not applied yet, or "
                                             "unknown")
        return ok({"tenant": c.tenant, "receipt": receipt})

    def detokenize(self, c: Call) -> ApiResponse:
        tenant = c.tenant
        req = parse_detokenize_body(c.body)
        try:
            value = self._detokenizer.detokenize(tenant, req["subject"], req["token"], f"api:{c.principal.key_id}",
                                                 req["reason"])
        except DetokenizeRefused as exc:
            # The Detokenizer audited the refusal; its messages never hold the value or the token.
            raise ApiError(422, "detokenize_refused", str(exc)) from None
        return ok({"tenant": tenant, "subject": req["subject"], "value": value})
