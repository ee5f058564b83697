"""Per-tenant counts for the compliance report, what a batch sends where, and the consent regime settings."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest

from streams.consent.report import compliance_report
from streams.consent.state import DropReason, Regime
from streams.dlq.reasons import Reason
from streams.ingest import samples
from streams.ingest.batch import BatchPipeline
from streams.ingest.processor import EventProcessor
from streams.records import Accepted, Dropped, Rejected, SourceRef
from streams.ingest.producer import encode_event, event_key
from streams.schema.registry import SchemaRegistry
from streams.settings import Settings, SettingsError, _regimes
from streams.sinks.store import stats_key

REPO = Path(__file__).resolve().parents[2]
SRC = SourceRef(topic="events.raw", partition=1, offset=42, timestamp_ms=1_700_000_000_000)
NOW = 1_750_000_000_000


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry.load_dir(REPO / "schemas")


@pytest.fixture(scope="module")
def proc(registry) -> EventProcessor:
    return EventProcessor(registry, ["acme", "globex"], max_event_bytes=256 * 1024)


@pytest.fixture(scope="module")
def pipeline(proc) -> BatchPipeline:
    # out_records and tenant_stats touch neither sink nor key store.
    return BatchPipeline(Settings(), proc, kafka=None, store=None, keys=None)


def accepted(proc, registry, maker=samples.signup, tenant="acme", subject="u-1", fmt="avro") -> Accepted:
    event = maker(tenant, subject, random.Random(5))
    out = proc.process(event_key(event), encode_event(registry, event, fmt), SRC, now_ms=NOW)
    assert isinstance(out, Accepted), out
    return out


def dropped(tenant: str, reason: DropReason, n: int = 0) -> Dropped:
    return Dropped(tenant, f"00000000-0000-4000-8000-{n:012d}", "order_placed", reason.value, SRC)


def rejected_without_tenant(proc) -> Rejected:
    out = proc.process(b"acme/u-1", b"\x00\x01not an event", SRC, now_ms=NOW)
    assert isinstance(out, Rejected) and out.tenant is None
    return out


def rejected_with_tenant(proc, registry, tenant="acme") -> Rejected:
    event = samples.order(tenant, "u-9", random.Random(3))
    out = proc.process(b"wrong/key", encode_event(registry, event, "json"), SRC, now_ms=NOW)
    assert isinstance(out, Rejected) and out.tenant == tenant and out.reason is Reason.KEY_MISMATCH
    return out


def unknown_tenant(proc, registry) -> Rejected:
    event = samples.signup("initech", "u-1", random.Random(1))
    out = proc.process(event_key(event), encode_event(registry, event, "avro"), SRC, now_ms=NOW)
    assert isinstance(out, Rejected) and out.reason is Reason.UNKNOWN_TENANT
    return out


@pytest.fixture(scope="module")
def mix(proc, registry):
    return [
        accepted(proc, registry, samples.signup, "acme", "u-1"),
        accepted(proc, registry, samples.order, "acme", "u-2", "json"),
        accepted(proc, registry, samples.support, "globex", "u-3"),
        dropped("acme", DropReason.ERASED, 1),
        dropped("acme", DropReason.ERASED, 2),
        dropped("acme", DropReason.NO_CONSENT, 3),
        dropped("globex", DropReason.OPTED_OUT, 4),
        dropped("globex", DropReason.CONSENT_REVOKED, 5),
        rejected_with_tenant(proc, registry, "acme"),
        rejected_with_tenant(proc, registry, "globex"),
        rejected_without_tenant(proc),
        unknown_tenant(proc, registry),
        Rejected(Reason.PROCESSING_ERROR, "KeyError getting the subject key", SRC, 10, None, tenant="globex"),
    ]


# --- tenant_stats -------------------------------------------------------------------------------------


def test_tenant_stats_over_a_mix(mix):
    assert BatchPipeline.tenant_stats(mix) == {
        "acme": {"processed": 6, "delivered": 2, "dropped_erased": 2, "dropped_no_consent": 1,
                 "dlq_key_mismatch": 1},
        "globex": {"processed": 5, "delivered": 1, "dropped_opted_out": 1, "dropped_consent_revoked": 1,
                   "dlq_key_mismatch": 1, "dlq_processing_error": 1},
    }


def test_processed_is_the_sum_of_the_outcomes(mix):
    for counts in BatchPipeline.tenant_stats(mix).values():
        assert counts["processed"] == sum(v for k, v in counts.items() if k != "processed")


def test_rejected_without_tenant_is_not_attributed(proc, registry):
    outcomes = [rejected_without_tenant(proc), unknown_tenant(proc, registry)]
    assert BatchPipeline.tenant_stats(outcomes) == {}
    stats = BatchPipeline.tenant_stats(outcomes + [accepted(proc, registry)])
    assert stats == {"acme": {"processed": 1, "delivered": 1}}
    assert "initech" not in stats and None not in stats


def test_tenant_stats_empty():
    assert BatchPipeline.tenant_stats([]) == {}


def test_drop_counts_use_the_reason_value_not_the_enum_name():
    stats = BatchPipeline.tenant_stats([dropped("acme", r, i) for i, r in enumerate(DropReason)])
    assert set(stats["acme"]) == {"processed"} | {f"dropped_{r.value}" for r in DropReason}
    assert not any("DropReason" in k for k in stats["acme"])


def test_dlq_counts_use_the_reason_value():
    rej = Rejected(Reason.INVALID_REQUEST, "x", SRC, 1, None, tenant="acme")
    assert BatchPipeline.tenant_stats([rej]) == {"acme": {"processed": 1, "dlq_invalid_request": 1}}


def test_tenant_stats_are_plain_dicts(mix):
    stats = BatchPipeline.tenant_stats(mix)
    assert type(stats) is dict
    assert all(type(c) is dict for c in stats.values())


# --- out_records ----------------------------------------------------------------------------------------


def test_out_records_nothing_for_dropped(pipeline):
    drops = [dropped("acme", r, i) for i, r in enumerate(DropReason)]
    assert pipeline.out_records(drops) == []


def test_out_records_over_a_mix(pipeline, mix):
    out = pipeline.out_records(mix)
    n_acc = sum(isinstance(o, Accepted) for o in mix)
    n_rej = sum(isinstance(o, Rejected) for o in mix)
    assert len(out) == n_acc + n_rej == 3 + 5
    tenant_recs = [r for r in out if r.topic.startswith("tenant.")]
    dlq_recs = [r for r in out if r.topic == Settings().dlq_topic]
    assert len(tenant_recs) == 3 and len(dlq_recs) == 5
    assert sorted(r.topic for r in tenant_recs) == ["tenant.acme.events"] * 2 + ["tenant.globex.events"]
    drop_ids = {o.event_id.encode() for o in mix if isinstance(o, Dropped)}
    for r in out:
        headers = dict(r.headers)
        assert headers.get("event-id") not in drop_ids
        assert r.value is not None
        for i in drop_ids:
            assert i not in r.value
    # Accepted are keyed by event and placed by subject; DLQ records keyed by tenant (or nothing).
    accepted = [o for o in mix if isinstance(o, Accepted)]
    assert {r.key for r in tenant_recs} == {f"{o.subject}/{o.event_id}".encode() for o in accepted}
    assert {r.partition_key for r in tenant_recs} == {b"u-1", b"u-2", b"u-3"}
    assert sorted((r.key for r in dlq_recs), key=lambda k: k or b"") == [None, None, b"acme", b"globex", b"globex"]


def test_out_records_preserves_order_without_dropped(pipeline, mix):
    """Leaving out the dropped outcomes changes nothing else: same records (values byte for byte,
    DLQ timestamps included: both calls get one clock reading), same order."""
    kept = [o for o in mix if not isinstance(o, Dropped)]
    assert [(r.topic, r.key, r.value, r.headers) for r in pipeline.out_records(mix, now_ms=NOW)] == \
           [(r.topic, r.key, r.value, r.headers) for r in pipeline.out_records(kept, now_ms=NOW)]


def test_out_records_stamp_every_dlq_record_of_a_call_with_one_time(pipeline, mix, monkeypatch):
    """``now_ms`` stamps the DLQ records; without it the clock is read once per call."""
    from streams.dlq.record import decode_dlq

    dlq = Settings().dlq_topic
    stamped = [decode_dlq(r.value)["rejected_at_ms"] for r in pipeline.out_records(mix, now_ms=NOW) if r.topic == dlq]
    assert stamped == [NOW] * 5
    ticks = itertools.count(1_800_000_000.0, 1.0)  # a clock that moves one second at every reading
    monkeypatch.setattr("streams.ingest.batch.time.time", lambda: next(ticks))
    stamped = [decode_dlq(r.value)["rejected_at_ms"] for r in pipeline.out_records(mix) if r.topic == dlq]
    assert stamped == [1_800_000_000_000] * 5


# --- compliance_report over the counters -------------------------------------------------------------------


class FakeRedis:
    """Just what compliance_report reads: a stats hash and (here) no receipts."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[bytes, bytes]] = {}

    def hincrby(self, key: str, name: str, n: int) -> None:
        h = self.hashes.setdefault(key, {})
        h[name.encode()] = str(int(h.get(name.encode(), b"0")) + n).encode()

    def hgetall(self, key: str) -> dict[bytes, bytes]:
        return dict(self.hashes.get(key, {}))

    def zrange(self, key: str, start: int, end: int) -> list[bytes]:
        return []

    def mget(self, keys):  # pragma: no cover - no receipts here
        return [None for _ in keys]


def test_report_counts_from_tenant_stats(mix):
    r = FakeRedis()
    for _ in range(2):  # two batches (or one replayed: counted at least once)
        for tenant, counts in BatchPipeline.tenant_stats(mix).items():
            for name, n in counts.items():
                r.hincrby(stats_key(tenant), name, n)
    rep = compliance_report(r, "acme")
    assert rep["tenant"] == "acme"
    assert rep["events"] == {"processed": 12, "delivered": 4,
                             "dropped_for_consent": {"erased": 4, "no_consent": 2},
                             "dead_lettered": {"key_mismatch": 2}}
    assert rep["privacy_requests"] == {"total": 0, "by_type": {}, "parked": 0}
    assert rep["erasures"] == {"completed": 0, "p50_ms": None, "max_ms": None, "requests": []}
    assert compliance_report(r, "initech")["events"]["processed"] == 0


# --- settings: regimes ------------------------------------------------------------------------------------


def test_regimes_parse_sorted_and_stripped():
    assert _regimes(" globex = opt_in , acme=opt_out,, ") == (("acme", "opt_out"), ("globex", "opt_in"))
    assert _regimes("") == ()
    assert _regimes(" , ,") == ()


@pytest.mark.parametrize("raw", ["acme", "acme=", "acme=OPT_IN", "acme=optin", "acme:opt_in", "acme=opt_in=x",
                                 "acme=opt_in,globex", "acme=yes"])
def test_regimes_parse_errors(raw):
    with pytest.raises(SettingsError, match="STREAMS_TENANT_REGIMES"):
        _regimes(raw)


def test_regimes_error_through_from_env():
    with pytest.raises(SettingsError, match="STREAMS_TENANT_REGIMES"):
        Settings.from_env({"STREAMS_TENANT_REGIMES": "acme=maybe"})


def test_regime_of_default_is_opt_out():
    s = Settings.from_env({"STREAMS_TENANT_REGIMES": "globex=opt_in"})
    assert s.regime_of("globex") == "opt_in"
    assert s.regime_of("acme") == "opt_out"
    assert s.regime_of("initech") == "opt_out"
    assert Settings().regime_of("acme") == "opt_out"
    assert Regime(s.regime_of("globex")) is Regime.OPT_IN  # what runtime builds the gate with


@pytest.mark.parametrize("raw", ["=opt_in", "Globex=opt_in", "glo bex=opt_in", "globex/x=opt_in"])
def test_regimes_refuse_invalid_tenant_names(raw):
    with pytest.raises(SettingsError, match="STREAMS_TENANT_REGIMES"):
        _regimes(raw)


def test_regimes_refuse_conflicting_duplicates():
    with pytest.raises(SettingsError, match="STREAMS_TENANT_REGIMES"):
        _regimes("globex=opt_in,globex=opt_out")


def test_many_drops_are_audited_in_records_the_chain_accepts():
    """A batch with hundreds of consent drops: every event id audited, every record valid for the chain."""
    import uuid as _uuid

    from streams.audit.chain import AuditChain
    from streams.audit.signing import Signer
    from streams.ingest.batch import BatchPipeline
    from streams.records import Dropped, SourceRef

    chain = AuditChain("test:chain", Signer.generate("worker:test"))

    class ChainAudit:  # appends to a real (in-memory) chain, which validates each record
        def append(self, action, tenant, subject_pseudonym, reason, details=None):
            return chain.append("test", action, tenant, subject_pseudonym, reason, details)

    drops = [Dropped("acme", str(_uuid.uuid4()), "order_placed", "erased", SourceRef("raw", 0, i)) for i in range(260)]
    pipeline = BatchPipeline.__new__(BatchPipeline)
    pipeline.audit = ChainAudit()
    pipeline._audit_drops(drops)
    assert chain.seq == 10  # 260 ids, 25 a record -> 11 records, seq 0..10
