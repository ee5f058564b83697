"""Errors of the consent package."""


class ConsentError(Exception):
    """Base of consent errors."""


class InvalidRequest(ConsentError, ValueError):
    """A privacy request is malformed; the message says which field (never its value)."""
