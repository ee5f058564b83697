"""Rotating a tenant key with its audit record: the rule, for the CLI (``streams keys rotate``) and any API.

The caller opens the audit log first, so that a trail that cannot be written
at all stops the rotation before it starts. The rotation itself cannot be
undone (old key versions are deleted), so when its record then fails it
stands, and ``RotationNotAudited`` says so with the new version.
"""

from __future__ import annotations

from typing import Any, Protocol

from streams.audit.exceptions import AuditError
from streams.privacy.keys import KeyStore, RotationReport


class AuditAppend(Protocol):
    """What is needed of an audit log (``streams.audit.log.AuditLog``)."""

    def append(self, action: str, tenant: str | None, subject_pseudonym: str | None, reason: str,
               details: dict[str, Any] | None = None) -> Any: ...


class RotationNotAudited(AuditError):
    """The tenant key was rotated, but its audit record was not written (``report`` tells what was done)."""

    def __init__(self, message: str, report: RotationReport) -> None:
        super().__init__(message)
        self.report = report


def rotate_tenant_key_audited(store: KeyStore, audit: AuditAppend, tenant: str) -> RotationReport:
    """Rotate ``tenant``'s key and write ``key.rotate`` (old and new versions, counts) to ``audit``."""
    report = store.rotate_tenant_key(tenant)
    try:
        audit.append("key.rotate", tenant, None, "tenant key rotated",
                     {"old_version": report.old_version, "new_version": report.new_version,
                      "rewrapped": report.rewrapped, "deleted_versions": report.deleted_versions})
    except AuditError as exc:
        raise RotationNotAudited(f"tenant {tenant}'s key was rotated to version {report.new_version}, "
                                 f"but its audit record was not written: {exc}", report) from exc
    return report
