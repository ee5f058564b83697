"""The Redis key layout of the store: built in ``streams.keyspace`` (every Redis key in one place).

A thin re-export of the store's builders, for the callers and tests that import them from here.
"""

from __future__ import annotations

from streams.keyspace import event_key, store_pattern, store_prefix, subject_index, time_index, type_index

__all__ = ["store_prefix", "store_pattern", "event_key", "subject_index", "type_index", "time_index"]
