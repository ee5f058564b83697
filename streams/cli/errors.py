"""Errors of the command line."""


class UsageError(Exception):
    """A problem the user can fix; printed as one line, exit status 2."""
