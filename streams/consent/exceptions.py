"""Errors of the consent package."""

from streams.errors import StreamsError


class ConsentError(StreamsError):
    """Base of consent errors."""


class InvalidRequest(ConsentError, ValueError):
    """A privacy request is malformed; the message says which field (never its value)."""


class RequestsNotApplied(ConsentError, TimeoutError):
    """The privacy agent has not caught up with the requests topic in time: hold the batch back."""

    transient = True
