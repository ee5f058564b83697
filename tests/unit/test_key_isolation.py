"""A damaged key of one tenant sets aside only that tenant's events; a master-key fault holds everyone back.

The classification itself (which fault is whose) is decided by ``KeyStore`` on a real Redis
(tests/integration/test_key_store.py); here the batch's and the retry loop's reaction to each
class, with a key source that raises what KeyStore raises.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, Iterable

import pytest

from streams.dlq.reasons import Reason
from streams.dlq.record import decode_dlq, default_sealer
from streams.ingest import samples
from streams.ingest.batch import SUBJECT_KEY_DAMAGED, TENANT_KEY_DAMAGED, BatchPipeline, RawRecord
from streams.ingest.processor import EventProcessor
from streams.records import Accepted, Rejected
from streams.ingest.producer import encode_event, event_key
from streams.ops.metrics import Metrics
from streams.ops.retry import TENANT_FAULTS, TRANSIENT, hold_back
from streams.privacy.exceptions import KeyIntegrityError, KeyProviderError, TenantKeyDamaged
from streams.schema.registry import SchemaRegistry
from streams.settings import Settings
from tests.unit.test_poison_events import Kafka, Store

REPO = Path(__file__).resolve().parents[2]
CANARY = "keyiso.canary-8841@example.org"


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry.load_dir(REPO / "schemas")


class DamagedKeys:
    """KeyStore's contract with the faults it reports: ``tenant_damaged`` tenants raise a tenant-level
    ``TenantKeyDamaged``; ``subjects_damaged`` (tenant, subject) a subject-level one; the first
    ``shared`` calls raise ``KeyProviderError`` (the master key unusable)."""

    def __init__(self, tenant_damaged: Iterable[str] = (), subjects_damaged: Iterable[tuple[str, str]] = (),
                 shared: int = 0) -> None:
        self.tenant_damaged = set(tenant_damaged)
        self.subjects_damaged = set(subjects_damaged)
        self.shared = shared
        self.calls: list[tuple[str, frozenset[str]]] = []

    def subject_keys(self, tenant: str, subjects: Iterable[str], create: bool = True) -> dict[str, bytes]:
        subjects = frozenset(subjects)
        self.calls.append((tenant, subjects))
        if self.shared > 0:
            self.shared -= 1
            raise KeyProviderError("the master key does not unwrap its check record")
        if tenant in self.tenant_damaged:
            raise TenantKeyDamaged(tenant, f"tenant key v1 of {tenant!r} is damaged")
        bad = {s for s in subjects if (tenant, s) in self.subjects_damaged}
        if bad:
            raise TenantKeyDamaged(tenant, "subject key records damaged", subjects=frozenset(bad))
        return {s: os.urandom(64) for s in subjects}


def _pipeline(keys: DamagedKeys) -> tuple[BatchPipeline, Metrics]:
    registry = SchemaRegistry.load_dir(REPO / "schemas")
    metrics = Metrics()
    settings = Settings.from_env({"STREAMS_SINK_RETRY_MAX_SECONDS": "0.01"})
    proc = EventProcessor(registry, ["acme", "globex"], 256 * 1024)
    return BatchPipeline(settings, proc, Kafka(), Store(), keys, metrics), metrics  # type: ignore[arg-type]


def _records(registry: SchemaRegistry, events: list[dict[str, Any]]) -> list[RawRecord]:
    return [RawRecord(event_key(e), encode_event(registry, e, "avro"), "events.raw", 0, i)
            for i, e in enumerate(events)]


def _events() -> list[dict[str, Any]]:
    return ([samples.signup("acme", f"a{i % 3}", email=CANARY) for i in range(6)]
            + [samples.signup("globex", f"g{i % 3}", email=CANARY) for i in range(6)])


def _kinds(outcomes: list[Any]) -> list[tuple[str, str]]:
    return [(o.tenant or "?", "accepted" if isinstance(o, Accepted) else o.reason.value) for o in outcomes]


def test_the_reason_and_the_retry_classes():
    assert Reason("key_error") is Reason.KEY_ERROR
    assert issubclass(TenantKeyDamaged, KeyIntegrityError)  # callers catching the old type still do
    assert issubclass(TenantKeyDamaged, TENANT_FAULTS) and issubclass(TenantKeyDamaged, TRANSIENT)
    assert issubclass(KeyProviderError, TRANSIENT) and not issubclass(KeyProviderError, TENANT_FAULTS)
    exc = TenantKeyDamaged("acme", "two subject key records of tenant 'acme' are damaged",
                           subjects=frozenset({"alice@example.org"}))
    assert "alice" not in str(exc) and "alice" not in repr(exc)  # subject ids stay out of the text


def test_hold_back_raises_a_tenant_fault_at_once_and_retries_a_shared_one():
    metrics = Metrics()
    calls = []

    async def damaged() -> None:
        calls.append(1)
        raise TenantKeyDamaged("acme", "damaged")

    with pytest.raises(TenantKeyDamaged):
        asyncio.run(hold_back("keys", damaged, metrics, 0.01))
    assert calls == [1] and metrics.value("streams_sink_retries_total", sink="keys") == 0

    left = {"provider": 2, "integrity": 1}

    async def shared() -> str:
        if left["provider"]:
            left["provider"] -= 1
            raise KeyProviderError("provider down")
        if left["integrity"]:  # a KeyIntegrityError nobody pinned on one tenant: still held back
            left["integrity"] -= 1
            raise KeyIntegrityError("cannot unwrap")
        return "ok"

    assert asyncio.run(hold_back("keys", shared, metrics, 0.01)) == "ok"
    assert metrics.value("streams_sink_retries_total", sink="keys") == 3


def test_a_damaged_tenant_key_sets_aside_that_tenants_events_only(registry):
    p, metrics = _pipeline(DamagedKeys(tenant_damaged={"acme"}))
    outcomes = asyncio.run(p.outcomes(_records(registry, _events())))
    assert _kinds(outcomes) == [("acme", "key_error")] * 6 + [("globex", "accepted")] * 6
    assert {o.detail for o in outcomes if isinstance(o, Rejected)} == {TENANT_KEY_DAMAGED}
    assert metrics.value("streams_tenant_isolated_total", tenant="acme", reason="key_error") == 6
    assert metrics.value("streams_tenant_isolated_total", tenant="globex", reason="key_error") == 0
    assert metrics.value("streams_sink_retries_total", sink="keys") == 0  # not retried
    # The DLQ records carry no raw value.
    sealer = default_sealer()
    for o in outcomes:
        if isinstance(o, Rejected):
            doc = sealer.encode(o)
            assert CANARY.encode() not in doc
            assert decode_dlq(doc)["reason"] == "key_error"


def test_damaged_subject_records_set_aside_only_those_subjects(registry):
    keys = DamagedKeys(subjects_damaged={("acme", "a1")})
    p, metrics = _pipeline(keys)
    outcomes = asyncio.run(p.outcomes(_records(registry, _events())))
    want = [("acme", "key_error" if i % 3 == 1 else "accepted") for i in range(6)] + [("globex", "accepted")] * 6
    assert _kinds(outcomes) == want
    assert {o.detail for o in outcomes if isinstance(o, Rejected)} == {SUBJECT_KEY_DAMAGED}
    assert metrics.value("streams_tenant_isolated_total", tenant="acme", reason="key_error") == 2
    # Asked again for the tenant's other subjects, without the damaged one.
    assert [c for c in keys.calls if c[0] == "acme"] == [("acme", frozenset({"a0", "a1", "a2"})),
                                                          ("acme", frozenset({"a0", "a2"}))]


def test_a_master_key_fault_holds_every_tenant_back_then_delivers_all(registry):
    """Positive control of the shared case: nothing is set aside, the batch waits and then goes on."""
    p, metrics = _pipeline(DamagedKeys(shared=3))
    outcomes = asyncio.run(p.outcomes(_records(registry, _events())))
    assert _kinds(outcomes) == [("acme", "accepted")] * 6 + [("globex", "accepted")] * 6
    assert metrics.value("streams_sink_retries_total", sink="keys") == 3
    assert metrics.value("streams_tenant_isolated_total", tenant="acme", reason="key_error") == 0


def test_without_damage_every_event_is_accepted(registry):
    p, metrics = _pipeline(DamagedKeys())
    outcomes = asyncio.run(p.outcomes(_records(registry, _events())))
    assert _kinds(outcomes) == [("acme", "accepted")] * 6 + [("globex", "accepted")] * 6
