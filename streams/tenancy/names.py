"""What a tenant name may be: it becomes part of topic names, Redis keys and ACLs."""

from __future__ import annotations

# The rule itself is in streams.records (the bottom layer): settings checks STREAMS_TENANTS with it.
from streams.records import is_valid_tenant_name, tenant_name_problem
from streams.tenancy.exceptions import InvalidTenantName

__all__ = ["is_valid_tenant_name", "validate_tenant_name"]


def validate_tenant_name(name: str) -> str:
    """Return ``name`` or raise InvalidTenantName saying what the rule is."""
    problem = tenant_name_problem(name)
    if problem is not None:
        raise InvalidTenantName(problem)
    return name
