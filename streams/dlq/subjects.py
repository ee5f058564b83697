"""Subjects in the DLQ: named by pseudonym only, resolvable by an operator through an audited path.

A DLQ record names the subject of its event (or of its record key) only as the
audit trail does, ``pseudonym(tenant, subject)`` (``streams.privacy.pseudonyms``).
For triage, the worker keeps the way back in the pipeline-only keyspace:

``k:{<tenant>}:dlqsubj:<pseudonym>``  the subject id wrapped by the master key
(aad ``dlq-subject/<tenant>/<pseudonym>``), expiring with the DLQ's retention.

``streams dlq-resolve`` reads it after writing an audit record (who, why,
which pseudonym). An erasure deletes it (``forget``): from then on nothing in
the DLQ or beside it names the subject, and its receipt says so.
"""

from __future__ import annotations

import base64
import re
from typing import Any, Iterable

import redis

from streams.errors import StreamsError
from streams.dlq.keys import RETAIN_MS
from streams.keyspace import deleted_marker, dlq_subject_key
from streams.privacy.keys import KeyProvider


_PSEUDONYM = re.compile(r"p_[0-9a-f]{24}")


#: The mapping's Redis key (``streams.keyspace.dlq_subject_key``), under its old name.
mapping_key = dlq_subject_key


# Writes a mapping unless the tenant is deleted (its marker, in the same hash slot, checked in the
# same call): an event of a tenant deleted while the event was in flight must not leave a key of
# that tenant behind after the delete's receipt (the worker's tenant list may still name it).
_REMEMBER_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
"""


def _aad(tenant: str, pseudonym: str) -> bytes:
    return f"dlq-subject/{tenant}/{pseudonym}".encode()


class DlqSubjects:
    def __init__(self, client: redis.Redis, provider: KeyProvider, ttl_ms: int = RETAIN_MS) -> None:
        self._r = client
        self._provider = provider
        self.ttl_ms = ttl_ms
        self._remember = client.register_script(_REMEMBER_LUA)

    def __repr__(self) -> str:
        return "DlqSubjects(<mappings in Redis>)"

    def remember(self, entries: Iterable[tuple[str, str, str]]) -> None:
        """``(tenant, pseudonym, subject)`` triples, written in one round trip; none of a deleted tenant."""
        pipe = self._r.pipeline(transaction=False)
        n = 0
        for tenant, pseud, subject in set(entries):
            wrapped = base64.b64encode(self._provider.wrap(subject.encode(), _aad(tenant, pseud)))
            self._remember(keys=[deleted_marker(tenant), mapping_key(tenant, pseud)], args=[wrapped, self.ttl_ms],
                           client=pipe)
            n += 1
        if n:
            pipe.execute()

    def resolve(self, tenant: str, pseudonym: str) -> str | None:
        stored = self._r.get(mapping_key(tenant, pseudonym))
        if stored is None:
            return None
        return self._provider.unwrap(base64.b64decode(stored), _aad(tenant, pseudonym)).decode()

    def forget(self, tenant: str, pseudonym: str) -> int:
        return int(self._r.delete(mapping_key(tenant, pseudonym)))


MAX_REASON = 200


class ResolveRefused(StreamsError):
    """The pseudonym cannot be resolved (no reason given, malformed, or no mapping: erased or expired)."""


def resolve_audited(subjects: DlqSubjects, audit: Any, tenant: str, pseud: str, actor: str, reason: str) -> str:
    """The subject id behind a DLQ pseudonym, for triage. Every call, answered or refused, is in the
    audit trail (pseudonym, who, why) before anything is shown; an AuditError means no answer."""
    reason = (reason or "").strip()
    if len(reason) < 3:
        raise ResolveRefused("a reason is required (why the subject id is needed)")
    if len(reason) > MAX_REASON:
        raise ResolveRefused(f"the reason is limited to {MAX_REASON} characters")
    if not _PSEUDONYM.fullmatch(pseud):
        raise ResolveRefused("not a pseudonym (expected p_ and 24 hex characters)")
    subject = subjects.resolve(tenant, pseud)
    outcome = "ok" if subject is not None else "refused"
    details: dict[str, Any] = {"outcome": outcome}
    if subject is None:
        details["refused_because"] = "no mapping: subject erased, or no DLQ record of it retained"
    audit.append("dlq.resolve", tenant, pseud, reason, details, actor=actor)
    if subject is None:
        raise ResolveRefused("no subject behind this pseudonym: erased, or no DLQ record of it is retained")
    return subject
