"""The key hierarchy behind tokens and crypto-shredding.

::

    master key (KeyProvider: local key file, or a KMS; never leaves it)
      └─ wraps each tenant key, per version        (AES-256-GCM, 32 bytes)
           └─ wraps each subject key               (64 bytes: AES-SIV-512 for the tokens)

Erasure destroys a subject's key (``destroy_subject_key``): every token of that
subject, in every copy ever made, becomes irreversible at once. Rotating a
tenant key re-wraps the subject keys under a new tenant-key version; the
subject keys themselves never change, so every token ever issued stays
detokenizable. This package must not hand out an unwrapped key except to the code that
tokenizes or detokenizes with it, must never write key material under a tenant's
``t:{<tenant>}:`` prefix, and must never replace a damaged key record with a
new key (tokens already made with it would silently break).

Key material lives in Redis in a pipeline-only keyspace, ``k:{<tenant>}:``,
never under the tenants' ``t:{<tenant>}:`` prefix that tenant ACL users get:

=========================  ============================================================
``k:{t}:tenant``           HASH ``current`` -> ``"<n>"``; ``v<n>`` -> base64 of the tenant
                           key version n wrapped by the master key (aad
                           ``tenant-key/<t>/v<n>``)
``k:{t}:subj:<subject>``   STRING ``v<n>:`` + base64(nonce + AES-GCM(tenant key v<n>,
                           subject key, aad ``subject-key/<t>/<subject>``))
``k:{t}:check``            STRING base64 of 32 random bytes wrapped by the master key (aad
                           ``master-key-check/<t>``): tells a damaged tenant key from a
                           wrong master key (``MasterKeyCheck``)
=========================  ============================================================

The braces are a Redis Cluster hash tag: all of a tenant's keys share a slot,
so the Lua scripts (``scripts``) may touch the tenant hash and subject keys together.
Everything stored is ASCII, so a client with ``decode_responses=True`` works too.

Nothing here logs, and no message, exception or ``repr`` contains key bytes
(raw, wrapped or encoded). Unwrapped tenant keys are cached in memory per
(tenant, version); subject keys never are, so a destroyed subject key is
unusable on every worker at once.

``KeyStore`` is synchronous (redis-py); the async worker calls it through
``run_in_executor``. Redis errors (``redis.RedisError``, ``OSError``) propagate
as they are, for the caller to retry.

Modules: ``provider`` (the ``KeyProvider`` contract, KMS error mapping), ``local_file``
(``LocalKeyFileProvider``), ``layout`` (record formats, sizes, aad), ``scripts`` (Lua),
``check`` (``MasterKeyCheck``), ``store`` (``KeyStore``). Import from this package. The Redis key
names are built in ``streams.keyspace`` (re-exported here).
"""

from streams.keyspace import check_key_name, pipeline_prefix, subject_key_name, tenant_hash_key
from streams.privacy.keys.check import MasterKeyCheck
from streams.privacy.keys.layout import SUBJECT_KEY_BYTES, TENANT_KEY_BYTES, check_aad, subject_key_aad, tenant_key_aad
from streams.privacy.keys.local_file import MASTER_KEY_BYTES, LocalKeyFileProvider
from streams.privacy.keys.provider import KeyProvider
from streams.privacy.keys.store import KeyStore, RotationReport

__all__ = [
    "KeyProvider", "LocalKeyFileProvider", "KeyStore", "RotationReport", "MasterKeyCheck",
    "SUBJECT_KEY_BYTES", "TENANT_KEY_BYTES", "MASTER_KEY_BYTES",
    "pipeline_prefix", "tenant_hash_key", "subject_key_name", "check_key_name",
    "tenant_key_aad", "subject_key_aad", "check_aad",
]
