"""What the API needs of the parts it is given (the audit log, the request filer, the tenant control).

Protocols only, importing nothing of ``streams``: the handlers, the checks and
the control routes depend on these shapes, never on each other's modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Protocol

if TYPE_CHECKING:  # annotations only
    from streams.api.responses import ApiResponse
    from streams.consent.requests import PrivacyRequest


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
