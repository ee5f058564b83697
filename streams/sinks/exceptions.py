"""Errors of the sinks package."""


class SinkError(Exception):
    """Base of sink errors."""


class SinkUnavailable(SinkError):
    """A sink (broker or Redis) did not accept a write; the batch is retried, never acked."""
