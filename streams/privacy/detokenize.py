"""Detokenize: the only way back from a token to the value, for an authorized caller, always audited.

Every call, allowed or refused, leaves an audit record naming who asked and
why, the token's kind and the outcome, never the value or the token. A value
is returned only after its audit record was acknowledged by the broker: if the
audit cannot be written, nothing is revealed.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.audit.log import AuditLog
from streams.privacy.exceptions import KeyNotFound, PrivacyError, TokenError
from streams.privacy.keys import KeyStore
from streams.privacy.pseudonyms import Pseudonymizer
from streams.privacy.transforms import SubjectCipher, token_kind
from streams.tenancy.names import validate_tenant_name

MAX_REASON = 200


class DetokenizeRefused(PrivacyError):
    """The request is not allowed or cannot be served; the message says why (never the value)."""


@dataclass
class Detokenizer:
    keys: KeyStore
    audit: AuditLog
    pseudonyms: Pseudonymizer

    def detokenize(self, tenant: str, subject: str, token: str, actor: str, reason: str) -> str:
        validate_tenant_name(tenant)
        reason = (reason or "").strip()
        if len(reason) < 3:
            raise DetokenizeRefused("a reason is required (why this value is needed)")
        if len(reason) > MAX_REASON:
            raise DetokenizeRefused(f"the reason is limited to {MAX_REASON} characters")
        kind = token_kind(token)
        who = self.pseudonyms(tenant, subject)
        if kind is None:
            self._audit(actor, tenant, who, reason, "refused", "not a token")
            raise DetokenizeRefused("not a token (expected tok.<kind>.<data>)")
        try:
            key = self.keys.subject_key(tenant, subject)
        except KeyNotFound:
            self._audit(actor, tenant, who, reason, "refused", "no key: subject unknown or erased", kind)
            raise DetokenizeRefused("no key for this subject: unknown, or erased (its tokens are irreversible)") from None
        try:
            _, value = SubjectCipher(key).detokenize(token)
        except TokenError:
            self._audit(actor, tenant, who, reason, "refused", "token is not this subject's", kind)
            raise DetokenizeRefused("this token does not belong to this subject") from None
        self._audit(actor, tenant, who, reason, "ok", None, kind)  # raises AuditError: then no value
        return value

    def _audit(self, actor: str, tenant: str, who: str, reason: str, outcome: str, why: str | None,
               kind: str | None = None) -> None:
        details: dict[str, object] = {"outcome": outcome, "token_kind": kind}
        if why:
            details["refused_because"] = why
        self.audit.append("detokenize", tenant, who, reason, details, actor=actor)
