"""Consent state: what each request does to it, and the decision it gives for an event (pure logic)."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.consent import request_types as T
from streams.consent.request_types import RequestKind
from streams.consent.requests import PURPOSES, PrivacyRequest, validate
from streams.consent.state import MAX_APPLIED, DropReason, Regime, SubjectState, apply, decide

_ids = itertools.count(1)


def req(type_: RequestKind, purpose: str | None = None, rid: str | None = None, at: int | None = None) -> PrivacyRequest:
    n = next(_ids)
    return validate({"request_id": rid or f"r-{n:032x}", "type": type_.name, "tenant": "acme", "subject": "u-1",
                     "purpose": purpose, "filed_at_ms": at or 1_700_000_000_000 + n, "actor": "test"})


def run(*reqs: PrivacyRequest, state: SubjectState | None = None) -> SubjectState:
    s = state or SubjectState()
    for r in reqs:
        s = apply(s, r)
    return s


ALL_PURPOSES = [*PURPOSES, ""]  # "" is the gate's purpose for an event type without one


def decisions(s: SubjectState) -> set[DropReason | None]:
    return {decide(s, p, r) for p in ALL_PURPOSES for r in Regime}


# --- the default -------------------------------------------------------------------------------------


def test_default_state_is_empty():
    s = SubjectState()
    assert (s.granted, s.revoked, s.opted_out, s.erased, s.suppressed) == (frozenset(), frozenset(), False, False,
                                                                            False)
    assert s.last_request is None and s.updated_at_ms == 0 and s.applied == ()


@pytest.mark.parametrize("purpose", PURPOSES)
def test_default_state_processes_under_opt_out_and_drops_under_opt_in(purpose):
    assert decide(SubjectState(), purpose, Regime.OPT_OUT) is None
    assert decide(SubjectState(), purpose, Regime.OPT_IN) is DropReason.NO_CONSENT


# --- each request type ---------------------------------------------------------------------------------


def test_grant_adds_purpose():
    s = run(req(T.GRANT, "analytics"))
    assert s.granted == {"analytics"} and s.revoked == frozenset()
    assert decide(s, "analytics", Regime.OPT_IN) is None
    assert decide(s, "marketing", Regime.OPT_IN) is DropReason.NO_CONSENT
    assert decide(s, "marketing", Regime.OPT_OUT) is None


def test_revoke_marks_purpose_revoked():
    s = run(req(T.REVOKE, "marketing"))
    assert s.revoked == {"marketing"} and s.granted == frozenset()
    for regime in Regime:
        assert decide(s, "marketing", regime) is DropReason.CONSENT_REVOKED
    assert decide(s, "analytics", Regime.OPT_OUT) is None


def test_grant_then_revoke():
    s = run(req(T.GRANT, "analytics"), req(T.GRANT, "marketing"), req(T.REVOKE, "analytics"))
    assert s.granted == {"marketing"} and s.revoked == {"analytics"}
    assert decide(s, "analytics", Regime.OPT_IN) is DropReason.CONSENT_REVOKED
    assert decide(s, "analytics", Regime.OPT_OUT) is DropReason.CONSENT_REVOKED
    assert decide(s, "marketing", Regime.OPT_IN) is None


def test_revoke_then_grant_again():
    s = run(req(T.REVOKE, "analytics"), req(T.GRANT, "analytics"))
    assert s.granted == {"analytics"} and s.revoked == frozenset()
    assert decide(s, "analytics", Regime.OPT_IN) is None


def test_opt_out_drops_everything_as_opted_out():
    s = run(req(T.GRANT, "analytics"), req(T.OPT_OUT))
    assert s.opted_out and s.granted == {"analytics"}  # grants survive an opt-out
    assert decisions(s) == {DropReason.OPTED_OUT}


def test_opt_out_then_opt_in():
    s = run(req(T.GRANT, "analytics"), req(T.REVOKE, "marketing"), req(T.OPT_OUT), req(T.OPT_IN))
    assert not s.opted_out
    assert decide(s, "analytics", Regime.OPT_IN) is None  # the earlier grant is back in force
    assert decide(s, "marketing", Regime.OPT_OUT) is DropReason.CONSENT_REVOKED  # opt-in does not undo a revoke
    assert decide(s, "ml_training", Regime.OPT_OUT) is None
    assert decide(s, "ml_training", Regime.OPT_IN) is DropReason.NO_CONSENT  # opt-in is not a grant


def test_erase_clears_grants_keeps_revocations_and_blocks():
    s = run(req(T.GRANT, "analytics"), req(T.REVOKE, "marketing"), req(T.ERASE))
    assert s.erased and not s.suppressed
    assert s.granted == frozenset() and s.revoked == frozenset({"marketing"})
    assert decisions(s) == {DropReason.ERASED}
    # An opt-in after the erasure does not revive the refused purpose.
    after = run(req(T.GRANT, "analytics"), req(T.REVOKE, "marketing"), req(T.ERASE), req(T.OPT_IN))
    assert decide(after, "marketing", Regime.OPT_OUT) is DropReason.CONSENT_REVOKED


def test_erase_then_opt_in_lifts_the_block():
    s = run(req(T.GRANT, "analytics"), req(T.ERASE), req(T.OPT_IN))
    assert not s.erased and not s.suppressed
    assert decide(s, "analytics", Regime.OPT_OUT) is None
    assert decide(s, "analytics", Regime.OPT_IN) is DropReason.NO_CONSENT  # the pre-erasure grant is gone


def test_grant_after_erase_does_not_lift_the_block():
    s = run(req(T.ERASE), req(T.GRANT, "analytics"))
    assert s.granted == {"analytics"}
    assert decisions(s) == {DropReason.ERASED}
    s = apply(s, req(T.OPT_IN))
    assert decide(s, "analytics", Regime.OPT_IN) is None


def test_erase_and_suppress_then_opt_in_does_not_lift_it():
    s = run(req(T.GRANT, "analytics"), req(T.ERASE_AND_SUPPRESS))
    assert s.erased and s.suppressed and s.granted == frozenset()
    assert decisions(s) == {DropReason.ERASED}
    s = run(req(T.OPT_IN), req(T.GRANT, "analytics"), req(T.OPT_IN), req(T.ERASE), req(T.OPT_IN), state=s)
    assert s.suppressed
    assert decisions(s) == {DropReason.ERASED}


def test_erase_after_opt_out_then_opt_in_lifts_both():
    s = run(req(T.OPT_OUT), req(T.ERASE))
    assert s.opted_out and s.erased
    assert decisions(s) == {DropReason.ERASED}  # erased outranks opted_out
    s = apply(s, req(T.OPT_IN))
    assert decide(s, "analytics", Regime.OPT_OUT) is None


def test_apply_records_request_and_time():
    r = req(T.OPT_OUT, at=1_795_550_000_000)
    s = apply(SubjectState(), r)
    assert s.last_request == r.request_id
    assert s.updated_at_ms == 1_795_550_000_000
    assert s.applied == (r.request_id,)


def test_apply_does_not_mutate_its_input():
    s0 = run(req(T.GRANT, "analytics"))
    before = s0.to_json()
    run(req(T.ERASE_AND_SUPPRESS), state=s0)
    assert s0.to_json() == before


# --- idempotence ------------------------------------------------------------------------------------


@pytest.mark.parametrize("type_", list(T.BUILTINS), ids=lambda t: t.name)
def test_same_request_twice_is_once(type_):
    base = run(req(T.GRANT, "analytics"), req(T.REVOKE, "marketing"))
    r = req(type_, "ml_training" if type_.needs_purpose else None)
    once = apply(base, r)
    assert apply(once, r) == once
    assert apply(once, r) is once


def test_replay_after_later_requests_changes_nothing():
    revoke = req(T.REVOKE, "analytics")
    grant = req(T.GRANT, "analytics")
    s = run(revoke, grant)
    assert run(revoke, state=s) == s  # a replayed old revoke must not undo the newer grant
    assert decide(run(revoke, state=s), "analytics", Regime.OPT_IN) is None


def test_replayed_opt_out_does_not_undo_later_opt_in():
    out = req(T.OPT_OUT)
    s = run(out, req(T.OPT_IN), out)
    assert not s.opted_out


def test_applied_window_is_bounded_and_keeps_the_newest():
    rs = [req(T.GRANT, PURPOSES[i % len(PURPOSES)]) for i in range(MAX_APPLIED + 7)]
    s = run(*rs)
    assert len(s.applied) == MAX_APPLIED
    assert s.applied == tuple(r.request_id for r in rs[-MAX_APPLIED:])
    assert s.last_request == rs[-1].request_id
    for r in rs[-MAX_APPLIED:]:
        assert apply(s, r) is s
    # Older ids fell out of the window: replaying one is applied again (receipts stop replays earlier).
    replayed = apply(s, rs[0])
    assert replayed.applied[-1] == rs[0].request_id and len(replayed.applied) == MAX_APPLIED


def test_applied_window_survives_json():
    rs = [req(T.OPT_OUT) for _ in range(MAX_APPLIED + 3)]
    s = SubjectState.from_json(run(*rs).to_json())
    assert len(s.applied) == MAX_APPLIED
    assert apply(s, rs[-1]) == s


# --- decide: truth table ----------------------------------------------------------------------------

P = "analytics"


def expected(suppressed, erased, opted_out, revoked, granted, regime) -> DropReason | None:
    """The module docstring's table, first match wins."""
    if suppressed or erased:
        return DropReason.ERASED
    if opted_out:
        return DropReason.OPTED_OUT
    if revoked:
        return DropReason.CONSENT_REVOKED
    if regime is Regime.OPT_IN and not granted:
        return DropReason.NO_CONSENT
    return None


TABLE = list(itertools.product([False, True], repeat=5))


@pytest.mark.parametrize("regime", list(Regime), ids=lambda r: r.value)
@pytest.mark.parametrize("suppressed,erased,opted_out,revoked,granted", TABLE)
def test_decide_truth_table(suppressed, erased, opted_out, revoked, granted, regime):
    s = SubjectState(granted=frozenset({P}) if granted else frozenset({"marketing"}),
                     revoked=frozenset({P}) if revoked else frozenset({"ml_training"}),
                     opted_out=opted_out, erased=erased, suppressed=suppressed)
    assert decide(s, P, regime) is expected(suppressed, erased, opted_out, revoked, granted, regime)


@pytest.mark.parametrize("state,regime,want", [
    (SubjectState(), Regime.OPT_OUT, None),
    (SubjectState(), Regime.OPT_IN, DropReason.NO_CONSENT),
    (SubjectState(granted=frozenset({P})), Regime.OPT_IN, None),
    (SubjectState(granted=frozenset({P}), revoked=frozenset({P})), Regime.OPT_IN, DropReason.CONSENT_REVOKED),
    (SubjectState(revoked=frozenset({P}), opted_out=True), Regime.OPT_OUT, DropReason.OPTED_OUT),
    (SubjectState(opted_out=True, erased=True), Regime.OPT_OUT, DropReason.ERASED),
    (SubjectState(suppressed=True), Regime.OPT_OUT, DropReason.ERASED),
    (SubjectState(suppressed=True, granted=frozenset({P})), Regime.OPT_IN, DropReason.ERASED),
])
def test_decide_examples(state, regime, want):
    assert decide(state, P, regime) is want


def test_decide_unknown_purpose():
    s = SubjectState(granted=frozenset(PURPOSES))
    assert decide(s, "", Regime.OPT_IN) is DropReason.NO_CONSENT
    assert decide(s, "", Regime.OPT_OUT) is None


def test_drop_reason_values_are_the_report_names():
    assert [r.value for r in DropReason] == ["erased", "opted_out", "consent_revoked", "no_consent"]
    assert [r.value for r in Regime] == ["opt_in", "opt_out"]
    assert Regime("opt_in") is Regime.OPT_IN


# --- JSON ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [None, "", b""])
def test_from_json_empty_is_default(raw):
    assert SubjectState.from_json(raw) == SubjectState()


def test_from_json_missing_fields_default():
    assert SubjectState.from_json("{}") == SubjectState()
    assert SubjectState.from_json(b'{"erased": true}') == SubjectState(erased=True)


def test_json_round_trip():
    s = run(req(T.GRANT, "analytics"), req(T.GRANT, "marketing"), req(T.REVOKE, "ml_training"), req(T.OPT_OUT),
            req(T.ERASE_AND_SUPPRESS), req(T.GRANT, "customer_support"))
    raw = s.to_json()
    assert SubjectState.from_json(raw) == s
    assert SubjectState.from_json(raw.encode()) == s
    d = json.loads(raw)
    assert d["granted"] == ["customer_support"] and d["suppressed"] is True and d["erased"] is True
    assert d["applied"] == list(s.applied)
    assert SubjectState.from_json(SubjectState().to_json()) == SubjectState()


def test_to_json_is_deterministic():
    a = SubjectState(granted=frozenset(["marketing", "analytics", "ml_training"]))
    b = SubjectState(granted=frozenset(["ml_training", "analytics", "marketing"]))
    assert a.to_json() == b.to_json()
    assert json.loads(a.to_json())["granted"] == ["analytics", "marketing", "ml_training"]


# --- properties -------------------------------------------------------------------------------------------

steps = st.lists(
    st.tuples(st.sampled_from(list(T.BUILTINS)), st.sampled_from(PURPOSES), st.booleans()),  # bool: replay an earlier one
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_random_sequences(seq):
    s = SubjectState()
    history: list[PrivacyRequest] = []
    suppressed_at = None
    erased_block = False
    for i, (type_, purpose, replay) in enumerate(seq):
        if replay and history:
            r = history[i % len(history)]
        else:
            r = validate({"request_id": f"r-{len(history) + 1:032x}", "type": type_.name, "tenant": "acme",
                          "subject": "u-1", "purpose": purpose if type_.needs_purpose else None,
                          "filed_at_ms": 1_000 + i, "actor": "prop"})
            history.append(r)
        before = s
        s = apply(s, r)  # never raises
        assert isinstance(s, SubjectState)
        assert not (s.granted & s.revoked)
        assert len(s.applied) <= MAX_APPLIED
        assert SubjectState.from_json(s.to_json()) == s
        if r.request_id in before.applied:
            assert s is before
            continue
        if r.type is T.ERASE_AND_SUPPRESS and suppressed_at is None:
            suppressed_at = i
        if r.type.erases:
            erased_block = True
        elif r.type is T.OPT_IN:
            erased_block = False
        if suppressed_at is not None:
            assert s.suppressed
            assert decisions(s) == {DropReason.ERASED}
        elif erased_block:
            assert decisions(s) == {DropReason.ERASED}
        else:
            assert DropReason.ERASED not in decisions(s)


@settings(max_examples=100, deadline=None)
@given(steps, st.sampled_from(list(T.BUILTINS)), st.sampled_from(PURPOSES))
def test_apply_twice_equals_once_property(seq, type_, purpose):
    s = SubjectState()
    for i, (t, p, _) in enumerate(seq):
        s = apply(s, req(t, p if t.needs_purpose else None))
    r = req(type_, purpose if type_.needs_purpose else None)
    assert apply(apply(s, r), r) == apply(s, r)
