"""The Redis key layout of the store: now in ``streams.keyspace`` (every Redis key in one place).

Kept as a thin re-export for the callers and tests that import it. ``tenant_prefix`` is the old
name of ``store_prefix`` (the Redis ``t:{t}:``, not the Kafka ``tenant.<t>.``); use the new name.
"""

from __future__ import annotations

from streams.keyspace import event_key, store_pattern, store_prefix, subject_index, time_index, type_index

#: Old name of ``store_prefix``, kept for callers outside this branch (ambiguous with the Kafka prefix).
tenant_prefix = store_prefix

__all__ = ["store_prefix", "store_pattern", "event_key", "subject_index", "type_index", "time_index",
           "tenant_prefix"]
