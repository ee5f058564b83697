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
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from streams.consent.state import DropReason, Regime, SubjectState, decide
from streams.consent.store import ConsentStore

log = logging.getLogger(__name__)


@dataclass
class ConsentGate:
    consent: ConsentStore
    pseudonyms: Callable[[str, str], str]
    regimes: Mapping[str, Regime | str]  # a live view (streams.tenancy.registry.RegimeView) in the worker
    purposes: Mapping[str, str]  # event type -> purpose

    def states(self, subjects: Iterable[tuple[str, str]]) -> dict[tuple[str, str], SubjectState]:
        by_tenant: dict[str, dict[str, str]] = {}
        for tenant, subject in subjects:
            by_tenant.setdefault(tenant, {})[subject] = self.pseudonyms(tenant, subject)
        out: dict[tuple[str, str], SubjectState] = {}
        for tenant, subj_to_p in by_tenant.items():
            states = self.consent.states(tenant, set(subj_to_p.values()))
            for subject, p in subj_to_p.items():
                out[(tenant, subject)] = states[p]
        return out

    def decide(self, state: SubjectState, tenant: str, event_type: str) -> DropReason | None:
        return decide(state, self.purposes.get(event_type, ""), Regime(self.regimes.get(tenant, Regime.OPT_OUT)))
