"""Errors of the sinks package."""


class SinkError(Exception):
    """Base of sink errors."""


class SinkUnavailable(SinkError):
    """A sink (broker or Redis) did not accept a write; the batch is retried, never acked."""


class TenantsDeleted(SinkError):
    """A sink refused a batch's events of tenants that are deleted (their marker is set); the
    other tenants' events were written. Not transient: those events go to the DLQ."""

    def __init__(self, tenants: frozenset[str]) -> None:
        super().__init__(f"deleted tenants: {', '.join(sorted(tenants))}")
        self.tenants = tenants
