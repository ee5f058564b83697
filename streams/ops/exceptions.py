"""Errors of the operations package (topic management)."""

from streams.errors import StreamsError


class OpsError(StreamsError):
    """Base of operations errors."""


class TopicError(OpsError):
    """A topic could not be created or has a configuration the pipeline cannot use."""
