"""Errors of the operations package (local stack, topic management)."""

from streams.errors import StreamsError


class OpsError(StreamsError):
    """Base of operations errors."""


class StackError(OpsError):
    """The local broker or Redis could not be fetched, started or reached."""


class TopicError(OpsError):
    """A topic could not be created or has a configuration the pipeline cannot use."""
