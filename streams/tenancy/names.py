"""What a tenant name may be: it becomes part of topic names, Redis keys and ACLs."""

from __future__ import annotations

import re

from streams.tenancy.exceptions import InvalidTenantName

# Lowercase letters, digits and '-', starting with a letter: valid in a Kafka
# topic name, safe inside a Redis key pattern (no glob characters) and in an
# ACL prefix, and never confusable with the '/' that separates tenant/subject.
TENANT_NAME_PATTERN = r"[a-z][a-z0-9-]{0,62}"
_TENANT_RE = re.compile(TENANT_NAME_PATTERN)


def is_valid_tenant_name(name: str) -> bool:
    return bool(_TENANT_RE.fullmatch(name))


def validate_tenant_name(name: str) -> str:
    """Return ``name`` or raise InvalidTenantName saying what the rule is."""
    if not is_valid_tenant_name(name):
        raise InvalidTenantName(
            f"invalid tenant name {name[:70]!r}: use 1-63 lowercase letters, digits or '-', starting with a letter"
        )
    return name
