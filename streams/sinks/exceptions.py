"""Errors of the sinks package."""

from streams.errors import StreamsError


class SinkError(StreamsError):
    """Base of sink errors."""


class SinkUnavailable(SinkError):
    """A sink (broker or Redis) did not accept a write; the batch is retried, never acked."""

    transient = True


class TenantsDeleted(SinkError):
    """A sink refused a batch's events of tenants that are deleted (their marker is set); the
    other tenants' events were written. Not transient: those events go to the DLQ."""

    def __init__(self, tenants: frozenset[str]) -> None:
        super().__init__(f"deleted tenants: {', '.join(sorted(tenants))}")
        self.tenants = tenants


class TenantTopicsMissing(SinkError):
    """Delivering failed because these tenants' topics do not exist (a fault of theirs alone): the
    caller sets their events aside (DLQ ``tenant_unavailable``) and writes the batch again."""

    def __init__(self, tenants: frozenset[str]) -> None:
        super().__init__(", ".join(sorted(tenants)))
        self.tenants = tenants
