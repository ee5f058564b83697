"""Errors of the privacy package.

No message ever contains key bytes (raw, wrapped or encoded) or file contents
that could hold them: only names, versions, paths and what to do.
"""


class PrivacyError(Exception):
    """Base of privacy errors."""


class KeyProviderError(PrivacyError):
    """The master key is missing, unsafe (permissions, owner) or corrupt, or the provider failed."""


class KeyNotFound(PrivacyError):
    """A key does not exist: for example a subject key destroyed by an erasure."""


class KeyIntegrityError(PrivacyError):
    """Unwrapping failed: the wrong key, or the wrapped material was tampered with or damaged."""


class KeyRotationConflict(PrivacyError):
    """Another rotation of the same tenant key started meanwhile; that one completes the re-wrap."""


class PolicyError(PrivacyError):
    """A schema's privacy annotations are invalid (raised at start or by the lint, naming the field)."""


class TokenError(PrivacyError):
    """A token is malformed, or does not decrypt with the subject's key."""


class TenantDeleted(PrivacyError):
    """The tenant is deleted (its marker is set): no key of it is made again."""
