"""``RequestKind``: what one type of privacy request does to a subject's consent state.

A request type is one class: its ``name`` (the ``type`` field on ``privacy.requests``, the CLI's
``--type``, the API's ``type``), a one-line ``doc``, whether it ``needs_purpose`` (then the
request names one of ``streams.consent.requests.PURPOSES``; otherwise it must name none), whether
it ``erases`` (then the executor deletes the subject's copies from every sink and destroys the
subject's key, ``streams.erasure.executor``, after ``apply``), and ``apply``: the subject's consent
state after the request, a pure function. Replays are filtered before ``apply`` is called
(``streams.consent.state.apply``), so ``apply`` need not be idempotent by itself, but it must not
read anything but its arguments: every worker must reach the same state.

The gate (``streams.consent.state.decide``) reads only the state's fields (granted, revoked,
opted_out, erased, suppressed), so a new type is a new combination of them; a type that needs a
new field changes ``SubjectState`` and ``decide`` too (and says so in its tests).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from streams.consent.requests import PrivacyRequest
    from streams.consent.state import SubjectState


class RequestKind:
    name: ClassVar[str]
    doc: ClassVar[str]
    needs_purpose: ClassVar[bool] = False
    erases: ClassVar[bool] = False

    def apply(self, state: "SubjectState", req: "PrivacyRequest") -> "SubjectState":
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<request type {self.name}>"
