"""Errors of the privacy package.

No message ever contains key bytes (raw, wrapped or encoded) or file contents
that could hold them: only names, versions, paths and what to do.
"""

from streams.errors import StreamsError


class PrivacyError(StreamsError):
    """Base of privacy errors."""


class KeyProviderError(PrivacyError):
    """The master key is missing, unsafe (permissions, owner) or corrupt, or the provider failed."""

    transient = True  # an operator fixes the key file or the provider comes back: hold back meanwhile


class KeyNotFound(PrivacyError):
    """A key does not exist: for example a subject key destroyed by an erasure."""


class KeyIntegrityError(PrivacyError):
    """Unwrapping failed: the wrong key, or the wrapped material was tampered with or damaged."""

    transient = True  # not pinned on one tenant: the master key itself may be wrong (TenantKeyDamaged is)


class TenantKeyDamaged(KeyIntegrityError):
    """One tenant's own key records are damaged, and the master key is proven good: that tenant's fault alone.

    ``subjects`` names the subjects whose own key records are damaged (the tenant's other subjects
    are fine); empty when the tenant key itself is damaged (every subject of the tenant). Never
    retried: the worker sets the events aside (DLQ ``key_error``) and lets the other tenants on.
    The message names the tenant only; subject ids are in ``subjects``, never in the text.
    """

    tenant_fault = True

    def __init__(self, tenant: str, message: str, subjects: frozenset[str] = frozenset()) -> None:
        super().__init__(message)
        self.tenant = tenant
        self.subjects = frozenset(subjects)


class KeyRotationConflict(PrivacyError):
    """Another rotation of the same tenant key started meanwhile; that one completes the re-wrap."""


class PolicyError(PrivacyError):
    """A schema's privacy annotations are invalid (raised at start or by the lint, naming the field)."""


class TokenError(PrivacyError):
    """A token is malformed, or does not decrypt with the subject's key."""


class TenantDeleted(PrivacyError):
    """The tenant is deleted (its marker is set): no key of it is made again."""
