"""Errors of the tenancy package."""


class TenancyError(Exception):
    """Base of tenancy errors."""


class InvalidTenantName(TenancyError, ValueError):
    """A tenant name breaks the naming rule (it ends up in topic names and keys)."""
