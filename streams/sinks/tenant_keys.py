"""Record keys of the tenant topics: ``<subject id>/<event id>``, partitioned by subject.

One key per event, so a compacted tenant topic keeps every event (compaction only
merges records with the same key) and an erasure removes exactly the subject's
events with one tombstone per event. Subject ids cannot contain ``/`` (the
validator allows ``[A-Za-z0-9._:-]``), so the first ``/`` splits the key.
"""

from __future__ import annotations


def record_key(subject: str, event_id: str) -> bytes:
    return f"{subject}/{event_id}".encode()


def split_key(key: bytes) -> tuple[str, str]:
    """(subject, event id) of a tenant topic key."""
    subject, sep, event_id = key.decode().partition("/")
    if not sep or not subject or not event_id:
        raise ValueError("not a tenant topic key")
    return subject, event_id
