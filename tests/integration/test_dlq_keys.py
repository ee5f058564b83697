"""The DLQ key in the key store (real Redis): created on first use, rotated on schedule, old versions
destroyed after the DLQ's retention; and the pseudonyms' way back, audited, gone with an erasure."""

from __future__ import annotations

import uuid
from typing import Iterator

import pytest
import redis

from streams.dlq.keys import DlqKeyring, redis_key
from streams.dlq.subjects import DlqSubjects, ResolveRefused, mapping_key, resolve_audited
from streams.privacy.keys import LocalKeyFileProvider

DAY_S = 24 * 3600


@pytest.fixture
def client(stack) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(stack.redis_url, socket_timeout=10)
    yield c
    c.close()


@pytest.fixture
def provider(tmp_path) -> LocalKeyFileProvider:
    return LocalKeyFileProvider(tmp_path / "keys" / "master.key")


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def topic(client) -> Iterator[str]:
    t = f"events.dlq.{uuid.uuid4().hex[:8]}"
    yield t
    client.delete(redis_key(t))


def test_key_is_stored_wrapped_and_shared(client, provider, topic):
    a = DlqKeyring(client, provider, topic)
    b = DlqKeyring(client, provider, topic)
    fa = a.fingerprint("payload", "acme", b"x")
    assert fa.startswith("v1:") and fa == b.fingerprint("payload", "acme", b"x")  # every worker agrees
    stored = client.hgetall(redis_key(topic))
    assert set(stored) == {b"current", b"v1", b"t1"}
    assert a.current()[1] not in stored[b"v1"]  # wrapped, not the key itself
    other = DlqKeyring(client, LocalKeyFileProvider(provider.path.parent.parent / "other" / "master.key"), topic)
    with pytest.raises(Exception):
        other.fingerprint("payload", "acme", b"x")  # another master key cannot use it


def test_rotation_schedule_and_retention(client, provider, topic):
    clock = Clock()
    ring = DlqKeyring(client, provider, topic, rotate_ms=7 * DAY_S * 1000, retain_ms=30 * DAY_S * 1000, clock=clock)
    f1 = ring.fingerprint("payload", "acme", b"short")
    clock.t += 6 * DAY_S
    assert ring.fingerprint("payload", "acme", b"short") == f1  # within the week: same version
    clock.t += 2 * DAY_S
    f2 = ring.fingerprint("payload", "acme", b"short")
    assert f2.startswith("v2:") and f2 != f1  # rotated on schedule
    assert set(ring.fingerprints("payload", "acme", b"short")) == {f1, f2}  # an operator still matches v1 records
    for _ in range(5):  # weeks pass; v1's successor took over > 30 days ago -> v1 destroyed
        clock.t += 7 * DAY_S + 1
        ring.current()
    # v2 took over on day 8, v7 on day 43: v1 is destroyed (its successor > 30 days ago), v2 (successor
    # on day 15, 28 days ago) still matches retained records.
    live = {v for v, _ in ring.live()}
    assert live == {2, 3, 4, 5, 6, 7}
    assert f1 not in ring.fingerprints("payload", "acme", b"short")


def test_racing_rotations_agree_on_one_version(client, provider, topic):
    clock = Clock()
    rings = [DlqKeyring(client, provider, topic, clock=clock) for _ in range(3)]
    rings[0].current()
    clock.t += 8 * DAY_S
    versions = {r.current()[0] for r in rings}
    assert versions == {2}


class Audit:
    def __init__(self) -> None:
        self.records: list[tuple] = []

    def append(self, action, tenant, subject, reason, details=None, *, actor=None):
        self.records.append((action, tenant, subject, reason, dict(details or {}), actor))


def test_resolve_is_audited_and_erasure_forgets(client, provider):
    tenant = f"dt{uuid.uuid4().hex[:8]}"
    subjects = DlqSubjects(client, provider)
    p = "p_" + "ab" * 12
    subjects.remember([(tenant, p, "subj-Real-42")])
    assert b"subj-Real-42" not in client.get(mapping_key(tenant, p))  # wrapped
    assert 0 < client.pttl(mapping_key(tenant, p)) <= subjects.ttl_ms  # expires with the DLQ's retention
    audit = Audit()
    assert resolve_audited(subjects, audit, tenant, p, "cli:op", "triage ticket 12") == "subj-Real-42"
    assert audit.records[-1][:3] == ("dlq.resolve", tenant, p) and audit.records[-1][4]["outcome"] == "ok"
    assert "subj-Real-42" not in repr(audit.records)
    with pytest.raises(ResolveRefused):
        resolve_audited(subjects, audit, tenant, p, "cli:op", "")  # no reason: refused, nothing shown
    with pytest.raises(ResolveRefused):
        resolve_audited(subjects, audit, tenant, "subj-Real-42", "cli:op", "guessing")  # not a pseudonym
    assert subjects.forget(tenant, p) == 1
    with pytest.raises(ResolveRefused):
        resolve_audited(subjects, audit, tenant, p, "cli:op", "after erasure")
    assert audit.records[-1][4]["outcome"] == "refused"


def test_no_mapping_is_written_for_a_deleted_tenant(client, provider):
    """An event of a tenant deleted while it was in flight, dead-lettered by a worker whose tenant list
    still names the tenant, must leave no key of it behind (found by the tenant-delete-under-load test)."""
    from streams.tenancy.registry import TenantRegistry

    live, gone = f"dl{uuid.uuid4().hex[:8]}", f"dg{uuid.uuid4().hex[:8]}"
    TenantRegistry(client).mark_deleted(gone)
    subjects = DlqSubjects(client, provider)
    p = "p_" + "cd" * 12
    subjects.remember([(live, p, "subj-1"), (gone, p, "subj-1")])
    assert client.exists(mapping_key(live, p)) == 1  # the control: the same call writes a live tenant's
    assert client.exists(mapping_key(gone, p)) == 0
    assert list(client.scan_iter(match=f"*{{{gone}}}*")) == [f"tenancy:{{{gone}}}:deleted".encode()]
