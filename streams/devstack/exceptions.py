"""Errors of the local development stack."""

from streams.errors import StreamsError


class StackError(StreamsError):
    """The local broker or Redis could not be fetched, started or reached."""
