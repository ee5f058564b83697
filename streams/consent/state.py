"""A subject's consent state and the decision it gives for an event: pure logic.

State per (tenant, subject): purposes granted, purposes revoked, opted out,
erased, suppressed. The decision for an event of purpose P under the tenant's
regime:

- suppressed, or erased (until an opt-in) -> drop ``erased``
- opted out                                -> drop ``opted_out``
- P revoked                                -> drop ``consent_revoked``
- regime ``opt_in`` and P not granted      -> drop ``no_consent``
- otherwise                                -> process

Drops are counted by reason and audited (``streams.consent.gate``); an event
is never silently lost.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streams.consent.requests import PrivacyRequest


class Regime(str, Enum):
    OPT_IN = "opt_in"  # nothing is processed before consent for the purpose
    OPT_OUT = "opt_out"  # processing until the subject opts out or revokes


class DropReason(str, Enum):
    ERASED = "erased"
    OPTED_OUT = "opted_out"
    CONSENT_REVOKED = "consent_revoked"
    NO_CONSENT = "no_consent"


@dataclass(frozen=True)
class SubjectState:
    granted: frozenset[str] = frozenset()
    revoked: frozenset[str] = frozenset()
    opted_out: bool = False
    erased: bool = False
    suppressed: bool = False
    last_request: str | None = None
    updated_at_ms: int = 0
    applied: tuple[str, ...] = field(default=())  # recent request ids: replays are no-ops

    def to_json(self) -> str:
        return json.dumps({"granted": sorted(self.granted), "revoked": sorted(self.revoked),
                           "opted_out": self.opted_out, "erased": self.erased, "suppressed": self.suppressed,
                           "last_request": self.last_request, "updated_at_ms": self.updated_at_ms,
                           "applied": list(self.applied)}, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes | None) -> "SubjectState":
        if not raw:
            return cls()
        d: dict[str, Any] = json.loads(raw)
        return cls(frozenset(d.get("granted", ())), frozenset(d.get("revoked", ())), bool(d.get("opted_out")),
                   bool(d.get("erased")), bool(d.get("suppressed")), d.get("last_request"),
                   int(d.get("updated_at_ms", 0)), tuple(d.get("applied", ())))


MAX_APPLIED = 20


def apply(state: SubjectState, req: "PrivacyRequest") -> SubjectState:
    """The state after ``req``. Applying the same request twice changes nothing (at-least-once input)."""
    if req.request_id in state.applied:
        return state
    s = req.type.apply(state, req)  # the type's own change (streams.consent.request_types)
    applied = (s.applied + (req.request_id,))[-MAX_APPLIED:]
    return replace(s, last_request=req.request_id, updated_at_ms=req.filed_at_ms, applied=applied)


def decide(state: SubjectState, purpose: str, regime: Regime) -> DropReason | None:
    """None: process the event; otherwise why it is dropped."""
    if state.suppressed or state.erased:
        return DropReason.ERASED
    if state.opted_out:
        return DropReason.OPTED_OUT
    if purpose in state.revoked:
        return DropReason.CONSENT_REVOKED
    if regime is Regime.OPT_IN and purpose not in state.granted:
        return DropReason.NO_CONSENT
    return None
