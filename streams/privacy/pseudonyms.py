"""The per-tenant secret behind audit pseudonyms, kept wrapped by the master key.

Audit records name a subject only as ``pseudonym(tenant, subject, secret)``
(``streams.audit.chain``). The secret is random, created on first use, stored
in the pipeline-only keyspace wrapped by the key provider, and deliberately
not destroyed by a subject's erasure: receipts and reports must keep naming
the erased subject's records consistently, and the pseudonym alone does not
identify anyone.

A stored secret that no longer unwraps while the master key unwraps the tenant's check record
is that tenant's fault alone (``TenantKeyDamaged``): its events are set aside and its privacy
requests parked (``streams.erasure.parking``) until an operator restores the record; a new secret
is never made in its place, since every consent state of the tenant is filed under the old one.
"""

from __future__ import annotations

import base64
import binascii
import os

import redis

from streams.audit.chain import pseudonym
from streams.keyspace import pseudonym_key
from streams.privacy.exceptions import KeyIntegrityError
from streams.privacy.keys import KeyProvider
from streams.privacy.keys.check import MasterKeyCheck

SECRET_BYTES = 32


class Pseudonymizer:
    def __init__(self, client: redis.Redis, provider: KeyProvider) -> None:
        self._r = client
        self._provider = provider
        self._secrets: dict[str, bytes] = {}
        self._check = MasterKeyCheck(client, provider)

    def __repr__(self) -> str:
        return "Pseudonymizer(<secrets hidden>)"

    def _secret(self, tenant: str) -> bytes:
        cached = self._secrets.get(tenant)
        if cached is not None:
            return cached
        aad = f"pseudonym-secret/{tenant}".encode()
        stored = self._r.get(pseudonym_key(tenant))
        if stored is None:
            wrapped = base64.b64encode(self._provider.wrap(os.urandom(SECRET_BYTES), aad))
            self._r.set(pseudonym_key(tenant), wrapped, nx=True)  # a racing creator wins; read back the winner
            stored = self._r.get(pseudonym_key(tenant))
        try:
            secret = self._provider.unwrap(base64.b64decode(stored, validate=True), aad)
        except (KeyIntegrityError, binascii.Error, ValueError):
            # Damaged, or the master key is wrong: blame() tells which (and raises for the latter).
            raise self._check.blame(tenant, "the pseudonym secret") from None
        if len(secret) != SECRET_BYTES:
            raise self._check.blame(tenant, "the pseudonym secret")
        self._secrets[tenant] = secret
        return secret

    def __call__(self, tenant: str, subject: str) -> str:
        return pseudonym(tenant, subject, self._secret(tenant))
