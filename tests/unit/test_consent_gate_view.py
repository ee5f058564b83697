"""ConsentGate.states: a fault of one tenant's records makes only that tenant unavailable.

The gate reads every subject's consent before a batch is decided. A tenant whose pseudonym
secret is damaged, or whose privacy requests are parked (``streams.erasure.parking``), has its
events set aside; the other tenants' states are read as before; a fault of the system (Redis,
the master key) still raises so the batch is held back.
"""

from __future__ import annotations

import pytest
import redis

from streams.consent.gate import REQUESTS_PARKED, SECRET_DAMAGED, ConsentGate
from streams.consent.state import SubjectState
from streams.privacy.exceptions import KeyProviderError, TenantKeyDamaged


class Consent:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def states(self, tenant: str, pseudonyms: set[str]) -> dict[str, SubjectState]:
        self.asked.append(tenant)
        return {p: SubjectState(opted_out=p.endswith("out")) for p in pseudonyms}


def _pseudonyms(fail: dict[str, Exception]):
    def name(tenant: str, subject: str) -> str:
        if tenant in fail:
            raise fail[tenant]
        return f"p-{tenant}-{subject}"
    return name


SUBJECTS = [("acme", "a1"), ("acme", "a2"), ("globex", "g-out"), ("initech", "i1")]


def test_without_faults_every_subject_has_a_state():
    consent = Consent()
    view = ConsentGate(consent, _pseudonyms({}), {}, {}).states(SUBJECTS)  # type: ignore[arg-type]
    assert set(view.states) == set(SUBJECTS) and view.unavailable == {}
    assert view.states[("globex", "g-out")].opted_out


def test_a_damaged_secret_makes_only_its_tenant_unavailable():
    consent = Consent()
    gate = ConsentGate(consent, _pseudonyms({"acme": TenantKeyDamaged("acme", "damaged")}), {}, {})  # type: ignore[arg-type]
    view = gate.states(SUBJECTS)
    assert view.unavailable == {"acme": SECRET_DAMAGED}
    assert set(view.states) == {("globex", "g-out"), ("initech", "i1")}
    assert "acme" not in consent.asked


def test_parked_tenants_are_unavailable_without_reading_their_consent():
    consent = Consent()
    gate = ConsentGate(consent, _pseudonyms({}), {}, {}, parked=lambda: {"globex"})  # type: ignore[arg-type]
    view = gate.states(SUBJECTS)
    assert view.unavailable == {"globex": REQUESTS_PARKED}
    assert ("globex", "g-out") not in view.states and consent.asked.count("globex") == 0


@pytest.mark.parametrize("fault", [redis.ConnectionError("down"), KeyProviderError("wrong master key")])
def test_a_fault_of_the_system_still_raises(fault):
    gate = ConsentGate(Consent(), _pseudonyms({"acme": fault}), {}, {})  # type: ignore[arg-type]
    with pytest.raises(type(fault)):
        gate.states(SUBJECTS)
