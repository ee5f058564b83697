"""The master-key provider interface: what ``KeyStore`` needs of a local key file or a KMS.

Its docstring is the contract a new provider implements, including how a KMS's errors map
onto ``KeyIntegrityError`` (wrong key or tampered) and ``KeyProviderError`` (unreachable).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class KeyProvider(Protocol):
    """Holds the master key and wraps/unwraps with it; the master key never leaves the provider.

    ``key_id`` names the master key (never derived reversibly from it).
    ``wrap(plaintext, aad)`` encrypts with authentication; ``unwrap(wrapped, aad)``
    returns the plaintext only if ``wrapped`` came from ``wrap`` with the same
    ``aad``, else raises ``KeyIntegrityError``. The ``aad`` binds a wrapped key to
    what it is for (``tenant-key/<tenant>/v<n>``), so one cannot be swapped for
    another.

    A KMS-backed provider implements the same three members with the KMS doing
    the cryptography: ``key_id`` is the KMS key's id/ARN; ``wrap`` is the KMS
    *Encrypt* call (AWS ``kms.encrypt(KeyId=..., Plaintext=plaintext,
    EncryptionContext={"streams": aad.decode()})``, GCP
    ``encrypt(name=..., plaintext=..., additional_authenticated_data=aad)``,
    Vault transit ``encrypt`` with ``context``) returning the ciphertext blob; and
    ``unwrap`` is *Decrypt* with the same encryption context, mapping the KMS's
    invalid-ciphertext error to ``KeyIntegrityError`` and access or availability
    errors to ``KeyProviderError``. Payloads are 32-byte tenant keys, far under
    the KMS limits (4 KiB), and ``KeyStore`` caches unwrapped tenant keys, so the
    KMS sees one call per tenant-key version per process.
    """

    @property
    def key_id(self) -> str: ...

    def wrap(self, plaintext: bytes, aad: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes: ...

