"""The Redis key layout of the store: one keyspace per tenant, ``t:{<tenant>}:``.

The braces make the tenant a Redis Cluster hash tag (a tenant's keys share a
slot, so a MULTI over them is legal) and the prefix is what a tenant's Redis
ACL user is limited to (``~t:{acme}:*``).
"""

from __future__ import annotations


def tenant_prefix(tenant: str) -> str:
    return f"t:{{{tenant}}}:"


def event_key(tenant: str, event_id: str) -> str:
    """The clean event document (JSON); writes are idempotent by event id."""
    return f"{tenant_prefix(tenant)}ev:{event_id}"


def subject_index(tenant: str, subject: str) -> str:
    """ZSET of event ids of one subject, scored by event time (ms)."""
    return f"{tenant_prefix(tenant)}subj:{subject}"


def type_index(tenant: str, event_type: str) -> str:
    """ZSET of event ids of one event type, scored by event time (ms): query by type and time."""
    return f"{tenant_prefix(tenant)}type:{event_type}"


def time_index(tenant: str) -> str:
    """ZSET of all the tenant's event ids, scored by event time (ms)."""
    return f"{tenant_prefix(tenant)}time"
