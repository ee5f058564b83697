"""Sealing and opening quarantined originals (``streams.dlq.quarantine``) and the redrive filter, without I/O."""

from __future__ import annotations

import json
import os

import pytest

from streams.dlq.quarantine import REASONS, Quarantine, QuarantineError
from streams.dlq.reasons import Reason
from streams.dlq.redrive import RedriveFilter
from streams.privacy.exceptions import TenantKeyDamaged
from streams.records import Rejected, SourceRef, Withheld, withhold

CANARY = b"Grace Hopper 1906"


class Ring:
    def __init__(self) -> None:
        self.keys = {1: os.urandom(32)}

    def current(self):
        v = max(self.keys)
        return v, self.keys[v]

    def live(self):
        return sorted(self.keys.items(), reverse=True)


class SubjectKeys:
    def __init__(self, damaged: frozenset[str] = frozenset()) -> None:
        self.keys: dict[tuple[str, str], bytes] = {}
        self.damaged = damaged

    def __call__(self, tenant: str, subject: str, create: bool) -> bytes | None:
        if tenant in self.damaged:
            raise TenantKeyDamaged(tenant, "damaged")
        if (tenant, subject) not in self.keys and create:
            self.keys[(tenant, subject)] = os.urandom(32)
        return self.keys.get((tenant, subject))


def _rej(reason: Reason = Reason.SCHEMA_VIOLATION, tenant: str | None = "acme", key: bytes = b"acme/u-1",
         subject: str | None = "u-1") -> Rejected:
    return Rejected(reason=reason, detail="d", source=SourceRef("events.raw", 0, 7, 1), payload_size=len(CANARY),
                    payload=withhold(b"{" + CANARY + b"}"), key=withhold(key), tenant=tenant,
                    event_id="0b1c2d3e-0000-4000-8000-000000000001",
                    subject=Withheld(subject) if subject else None)


def _q(keys: SubjectKeys | None = None, tenants=("acme",)) -> tuple[Quarantine, SubjectKeys]:
    keys = keys or SubjectKeys()
    return Quarantine("events.quarantine", Ring(), keys, lambda t, s: f"p_{t}", tenants), keys  # type: ignore[arg-type]


def test_only_rescuable_reasons_with_a_payload_are_kept():
    q, _ = _q()
    assert q.seal(_rej(Reason.UNDECODABLE)) is None and q.seal(_rej(Reason.OVERSIZED)) is None
    assert Reason.UNDECODABLE not in REASONS and Reason.SCHEMA_VIOLATION in REASONS
    assert q.seal(_rej()) is not None


def test_a_known_subject_is_sealed_with_its_key_and_shredded_with_it():
    q, keys = _q()
    ref, record_key, value = q.seal(_rej())
    assert record_key == f"acme/{ref}".encode()
    assert CANARY not in value and b"u-1" not in value and b"0b1c2d3e" not in value
    env = json.loads(value)
    assert (env["sealed_with"], env["subject"], env["tenant"]) == ("subject", "p_acme", "acme")
    opened = q.open(env, "u-1")
    assert (opened.key, opened.value, opened.event_id) == (b"acme/u-1", b"{" + CANARY + b"}",
                                                          "0b1c2d3e-0000-4000-8000-000000000001")
    with pytest.raises(QuarantineError, match="no longer named"):
        q.open(env, None)
    del keys.keys[("acme", "u-1")]  # the erasure destroys the key
    with pytest.raises(QuarantineError, match="destroyed"):
        q.open(env, "u-1")


def test_an_unknown_tenant_or_a_damaged_one_is_sealed_with_the_quarantine_key():
    q, _ = _q()
    env = json.loads(q.seal(_rej(Reason.UNKNOWN_TENANT, tenant=None, key=b"late/u-9", subject=None))[2])
    assert (env["sealed_with"], env["claimed_tenant"], env["subject"]) == ("quarantine", "late", None)
    assert q.open(env).key == b"late/u-9"
    q.keyring.keys.clear()  # destroyed at the end of the retention
    with pytest.raises(QuarantineError, match="older than the retention"):
        q.open(env)
    q2, _ = _q(SubjectKeys(damaged=frozenset({"acme"})))
    env = json.loads(q2.seal(_rej(Reason.KEY_ERROR))[2])
    assert env["sealed_with"] == "quarantine" and env["subject"] is None


def test_a_tampered_envelope_does_not_open():
    q, _ = _q()
    env = json.loads(q.seal(_rej())[2])
    env["ref"] = "q-" + "0" * 32  # the ref is the aad: another record's envelope cannot be swapped in
    with pytest.raises(QuarantineError, match="does not decrypt"):
        q.open(env, "u-1")


def test_the_redrive_filter():
    env = {"reason": "unknown_tenant", "tenant": None, "claimed_tenant": "late", "quarantined_at_ms": 1000}
    assert RedriveFilter("unknown_tenant").matches(env)
    assert not RedriveFilter("schema_violation").matches(env)
    assert RedriveFilter("unknown_tenant", tenant="late").matches(env)
    assert not RedriveFilter("unknown_tenant", tenant="acme").matches(env)
    assert RedriveFilter("unknown_tenant", since_ms=1000, until_ms=1001).matches(env)
    assert not RedriveFilter("unknown_tenant", since_ms=1001).matches(env)
    assert not RedriveFilter("unknown_tenant", until_ms=1000).matches(env)
