"""Creating, revoking and listing API keys with their audit records: the rules, for the CLI and the HTTP API.

``ApiKeyStore`` (``streams.api.api_keys``) only stores keys; an operator's
action on them must also reach the audit trail. The rule that matters: no key
the audit trail does not know of stays usable, so a key whose creation cannot
be audited is revoked at once (``KeyNotAudited`` with ``kept`` False). A
revocation is made first and audited after (a key that should stop working
stops even when the trail is down: ``kept`` True, the revocation stands).
Records carry the key's id and role, never its token or label (free text,
kept forever).
"""

from __future__ import annotations

from typing import Any, Protocol

from streams.api.api_keys import ApiKeyStore, Role
from streams.audit.exceptions import AuditError

#: The roles of keys that belong to one tenant (operator keys belong to none), in the order help texts list them.
TENANT_KEY_ROLES: tuple[str, ...] = tuple(r.value for r in Role if r is not Role.OPERATOR)


class AuditAppend(Protocol):
    """What is needed of an audit log (``streams.audit.log.AuditLog``, the API's ``AuditSink``)."""

    def append(self, action: str, tenant: str | None, subject_pseudonym: str | None, reason: str,
               details: dict[str, Any] | None = None) -> Any: ...


class KeyNotAudited(AuditError):
    """The audit record of a key action was not written. ``kept``: whether the action stands.

    A creation is undone (``kept`` False: the key was revoked again); a
    revocation stands (``kept`` True). The message says which.
    """

    def __init__(self, message: str, kept: bool) -> None:
        super().__init__(message)
        self.kept = kept


class AuditedApiKeys:
    """The API key actions of one actor, each written to its audit log (see the module docstring)."""

    def __init__(self, store: ApiKeyStore, audit: AuditAppend) -> None:
        self.store, self.audit = store, audit

    def __repr__(self) -> str:
        return "AuditedApiKeys()"

    def create(self, tenant: str | None, role: Role, label: str = "") -> dict[str, Any]:
        """Make a key; ``{key_id, tenant, role, label, token}`` (show the token once). KeyNotAudited: no key."""
        role = Role(role)
        key_id, token = self.store.create(tenant, role, label)
        try:
            self.audit.append("apikey.create", tenant, None, f"API key {key_id} created",
                              {"key_id": key_id, "role": role.value})
        except AuditError as exc:
            self.store.revoke(key_id)  # no key that the audit trail does not know of stays usable
            raise KeyNotAudited(f"the key was not kept: its creation could not be audited: {exc}", kept=False) \
                from exc
        return {"key_id": key_id, "tenant": tenant, "role": role.value, "label": label, "token": token}

    def revoke(self, meta: dict[str, Any]) -> dict[str, Any]:
        """Revoke the key ``meta`` describes (from ``ApiKeyStore.get``); its metadata with ``revoked``.

        KeyNotAudited (``kept`` True): revoked, but not audited.
        """
        revoked = self.store.revoke(meta["key_id"])  # unusable from here on, on every worker
        try:
            self.audit.append("apikey.revoke", meta["tenant"], None, f"API key {meta['key_id']} revoked",
                              {"key_id": meta["key_id"], "role": meta["role"], "existed": revoked})
        except AuditError as exc:
            raise KeyNotAudited(f"API key {meta['key_id']} is revoked, but the audit record was not written: "
                                f"{exc}", kept=True) from exc
        return {**meta, "revoked": True}

    def list(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Metadata of the keys (never tokens or hashes); the listing itself is audited."""
        keys = self.store.list(tenant)
        self.audit.append("apikey.list", tenant, None, "API keys listed", {"keys": len(keys)})
        return keys
