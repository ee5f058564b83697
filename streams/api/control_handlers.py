"""The tenant control routes' handlers: one call of the tenant service each, and its answer.

``TenantControl`` (``streams.api.control``) has validated the body and the
confirmation, taken a slot and made the service acting as the calling key;
the route table (``streams.api.routes``) names the handler of each route.
Errors the service raises are mapped to answers by ``TenantControl``.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from streams.api.params import TENANT
from streams.api.responses import ApiError, ApiResponse, ok

log = logging.getLogger(__name__)


class TenantServiceLike(Protocol):
    """What is used of ``streams.tenancy.onboarding.TenantService``."""

    def create(self, name: str, regime: str = ..., roles: Any = ..., quota: Any = ...) -> dict[str, Any]: ...
    def list(self) -> list[dict[str, Any]]: ...
    def describe(self, name: str) -> dict[str, Any]: ...
    def rotate_credentials(self, name: str) -> dict[str, Any]: ...
    def delete(self, name: str) -> dict[str, Any]: ...


def _named(name: str | None) -> str:
    """Every route but the list names a tenant (path or body), validated by now."""
    if name is None:
        raise ApiError(400, "invalid_parameter", f"a tenant name is required: {TENANT.rule()}")
    return name


def tenants_list(svc: TenantServiceLike, name: str | None, request: dict[str, Any] | None) -> ApiResponse:
    return ok({"tenants": svc.list()})


def tenants_create(svc: TenantServiceLike, name: str | None, request: dict[str, Any] | None) -> ApiResponse:
    name = _named(name)
    if request is None:  # TenantControl parses the body of this route before it calls here
        raise ApiError(404, "not_found", "no such route")
    extra = {"quota": request["quota"]} if "quota" in request else {}
    result = svc.create(name, request["regime"], request["roles"], **extra)
    created = result.get("status") == "created"
    log.info("api tenants_create: tenant %s %s", name, "created" if created else "existed")
    return ok(result, 201 if created else 200, {"Location": f"/v1/tenants/{name}"} if created else None)


def tenant_describe(svc: TenantServiceLike, name: str | None, request: dict[str, Any] | None) -> ApiResponse:
    return ok(svc.describe(_named(name)))


def tenant_rotate_credentials(svc: TenantServiceLike, name: str | None,
                              request: dict[str, Any] | None) -> ApiResponse:
    name = _named(name)
    result = svc.rotate_credentials(name)
    log.info("api tenant_rotate_credentials: tenant %s", name)
    return ok(result)


def tenant_delete(svc: TenantServiceLike, name: str | None, request: dict[str, Any] | None) -> ApiResponse:
    name = _named(name)
    receipt = svc.delete(name)
    log.info("api tenant_delete: tenant %s deleted, receipt %s", name, receipt.get("receipt_id"))
    return ok(receipt)
