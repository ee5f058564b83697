"""The six built-in request types (registered in ``streams.consent.request_types``)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from streams.consent.request_types.base import RequestKind

if TYPE_CHECKING:
    from streams.consent.requests import PrivacyRequest
    from streams.consent.state import SubjectState


class Grant(RequestKind):
    name = "grant"
    doc = "consent for one purpose (lifts an earlier revoke of it)"
    needs_purpose = True

    def apply(self, state: "SubjectState", req: "PrivacyRequest") -> "SubjectState":
        return replace(state, granted=state.granted | {req.purpose}, revoked=state.revoked - {req.purpose})


class Revoke(RequestKind):
    name = "revoke"
    doc = "consent for one purpose withdrawn: its events are dropped"
    needs_purpose = True

    def apply(self, state: "SubjectState", req: "PrivacyRequest") -> "SubjectState":
        return replace(state, granted=state.granted - {req.purpose}, revoked=state.revoked | {req.purpose})


class OptOut(RequestKind):
    name = "opt_out"
    doc = "no processing at all until an opt_in"

    def apply(self, state: "SubjectState", req: "PrivacyRequest") -> "SubjectState":
        return replace(state, opted_out=True)


class OptIn(RequestKind):
    name = "opt_in"
    doc = "lifts an opt-out, and an erasure's block, but never a suppression"

    def apply(self, state: "SubjectState", req: "PrivacyRequest") -> "SubjectState":
        return replace(state, opted_out=False, erased=False)


# Erasure forgets grants but keeps revocations: they only ever restrict, and an opt-in after an
# erasure must not revive a purpose the subject had refused.
class Erase(RequestKind):
    name = "erase"
    doc = "every copy deleted now; later events blocked until an opt_in"
    erases = True

    def apply(self, state: "SubjectState", req: "PrivacyRequest") -> "SubjectState":
        return replace(state, erased=True, granted=frozenset())


class EraseAndSuppress(RequestKind):
    name = "erase_and_suppress"
    doc = "erase, and no opt_in can ever lift the block"
    erases = True

    def apply(self, state: "SubjectState", req: "PrivacyRequest") -> "SubjectState":
        return replace(state, erased=True, suppressed=True, granted=frozenset())
