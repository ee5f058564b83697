"""The consent gate on the ingest path: is this event allowed for its purpose, and in the right order?

Order: an event published after a privacy request of its subject must see
that request's effect, even though events and requests arrive on two topics.
Before deciding a batch, the worker applies every request published so far on
its own partitions of ``privacy.requests`` and waits until the other workers
have applied theirs (``streams.erasure.reader``). Every request appended
before that moment (and so before any event of the batch was fetched) is then
in the consent state the batch reads; waiting on all partitions, not only the
batch's own, keeps this true whatever partitioner a producer used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from streams.consent.state import DropReason, Regime, SubjectState, decide
from streams.consent.store import ConsentStore
from streams.errors import TenantFault

#: Why a tenant's events are set aside (DLQ ``key_error``) although their own keys are fine.
SECRET_DAMAGED = "the tenant's pseudonym secret is damaged"
REQUESTS_PARKED = "the tenant's privacy requests are parked"


@dataclass(frozen=True)
class ConsentView:
    """The consent state of a batch's subjects, and the tenants whose consent cannot be decided now.

    ``unavailable``: tenant -> why (``SECRET_DAMAGED``, ``REQUESTS_PARKED``). Their subjects have no
    state here: their events are set aside, since an opt-out or erasure that could not be carried
    out, or not looked up, must hold before any event of its subject is delivered."""
    states: dict[tuple[str, str], SubjectState]
    unavailable: dict[str, str] = field(default_factory=dict)

log = logging.getLogger(__name__)


@dataclass
class ConsentGate:
    consent: ConsentStore
    pseudonyms: Callable[[str, str], str]
    regimes: Mapping[str, Regime | str]  # a live view (streams.tenancy.registry.RegimeView) in the worker
    purposes: Mapping[str, str]  # event type -> purpose
    parked: Callable[[], set[str]] | None = None  # tenants with parked requests (streams.erasure.parking)

    def states(self, subjects: Iterable[tuple[str, str]]) -> ConsentView:
        """Consent states by tenant; a tenant fault (its pseudonym secret damaged) makes only that
        tenant unavailable. Shared faults (Redis, the master key) raise: the caller holds back."""
        unavailable = {t: REQUESTS_PARKED for t in (self.parked() if self.parked is not None else ())}
        by_tenant: dict[str, dict[str, str]] = {}
        for tenant, subject in subjects:
            if tenant in unavailable:
                continue
            try:
                by_tenant.setdefault(tenant, {})[subject] = self.pseudonyms(tenant, subject)
            except Exception as exc:
                if not isinstance(exc, TenantFault):
                    raise
                log.error("tenant %s: %s; its events are set aside (key_error)", tenant, exc)
                unavailable[tenant] = SECRET_DAMAGED
                by_tenant.pop(tenant, None)
        out: dict[tuple[str, str], SubjectState] = {}
        for tenant, subj_to_p in by_tenant.items():
            states = self.consent.states(tenant, set(subj_to_p.values()))
            for subject, p in subj_to_p.items():
                out[(tenant, subject)] = states[p]
        return ConsentView(out, unavailable)

    def decide(self, state: SubjectState, tenant: str, event_type: str) -> DropReason | None:
        return decide(state, self.purposes.get(event_type, ""), Regime(self.regimes.get(tenant, Regime.OPT_OUT)))
