"""``MasterKeyCheck``: a damaged tenant key record, or the wrong master key?"""

from __future__ import annotations

import base64
import binascii
import os

import redis

from streams.privacy.exceptions import KeyIntegrityError, KeyProviderError, TenantKeyDamaged
from streams.keyspace import check_key_name
from streams.privacy.keys.layout import check_aad
from streams.privacy.keys.provider import KeyProvider


class MasterKeyCheck:
    """Tells "this tenant's key record is damaged" from "the master key is wrong".

    To AES-GCM both look alike: the tenant key's tag does not verify. They must be handled
    apart: a damaged record is a fault of its tenant alone (its events go to the DLQ as
    ``key_error``, the other tenants go on), while a wrong master key (another key file
    mounted, another KMS key) unwraps nothing and is every tenant's fault (the batch is held
    back until an operator fixes it, as for a provider that is down).

    The decision: the master key is proven good when it unwraps another record of the same
    tenant, its check record ``k:{t}:check`` (32 random bytes the master key wrapped, aad
    ``master-key-check/<t>``). It is made (SET NX) with the tenant's first key, or by the first
    process that unwraps the tenant key once this check exists (a tenant older than it). When
    the tenant key does not unwrap, ``blame`` reads the check record:

    * it unwraps: the master key is right, the tenant key record is damaged: ``TenantKeyDamaged``;
    * it does not unwrap: the master key is wrong (or both records are damaged): ``KeyProviderError``,
      retried, every tenant held back: the safe side; the message says what to look at;
    * it is missing: nothing tells the two apart (a tenant damaged before any worker with this
      check unwrapped its key, or the record deleted): ``KeyProviderError``, held back, as before.

    Per tenant, not one record for the deployment: a wrong master key that makes a new tenant's
    keys makes that tenant's check record too, and it still cannot unwrap any older tenant's,
    so those are still held back, not dead-lettered. A provider that cannot be reached raises
    ``KeyProviderError`` itself and never gets here. Off the hot path: one EXISTS per tenant per
    process, and reads only after a failed unwrap (a check record this process verified once is
    not unwrapped again while it is unchanged).
    """

    def __init__(self, redis_client: redis.Redis, provider: KeyProvider) -> None:
        self._r = redis_client
        self._provider = provider
        self._ensured: set[str] = set()  # tenants whose check record exists
        self._verified: dict[str, bytes | str] = {}  # tenant -> the stored check record this process unwrapped

    def ensure(self, tenant: str, force: bool = False) -> None:
        """Make the tenant's check record if it has none. Call only after the master key is proven for
        the tenant: it made the tenant's first key (``force``: look even if this process saw one
        before, which another process may have deleted with the tenant), or it unwrapped the stored one."""
        if tenant in self._ensured and not force:
            return
        if not self._r.exists(check_key_name(tenant)):
            wrapped = self._provider.wrap(os.urandom(32), check_aad(tenant))
            self._r.set(check_key_name(tenant), base64.b64encode(wrapped), nx=True)
        self._ensured.add(tenant)

    def forget(self, tenant: str) -> None:
        self._ensured.discard(tenant)
        self._verified.pop(tenant, None)

    def blame(self, tenant: str, what: str) -> TenantKeyDamaged:
        """``what`` of ``tenant`` did not unwrap: returns ``TenantKeyDamaged`` to raise when the master key
        unwraps the tenant's check record; raises ``KeyProviderError`` when the master key may be at fault."""
        stored = self._r.get(check_key_name(tenant))
        if stored is None:
            raise KeyProviderError(
                f"{what} of tenant {tenant!r} does not unwrap, and no check record ({check_key_name(tenant)}) "
                "tells a damaged record from a wrong master key: held back. Check STREAMS_MASTER_KEY_FILE or "
                "the key provider first")
        if self._verified.get(tenant) != stored:
            try:
                self._provider.unwrap(base64.b64decode(stored, validate=True), check_aad(tenant))
            except (KeyIntegrityError, binascii.Error, ValueError):
                raise KeyProviderError(
                    f"{what} of tenant {tenant!r} does not unwrap, nor does its check record: the wrong master "
                    "key (STREAMS_MASTER_KEY_FILE or the KMS key), or both records are damaged; held back until "
                    "an operator fixes it") from None
            self._verified[tenant] = stored
        return TenantKeyDamaged(tenant, f"{what} of tenant {tenant!r} is damaged (the master key is good): "
                                        "its events are set aside")

