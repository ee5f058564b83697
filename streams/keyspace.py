"""Every Redis key the project writes, in one place: read this file to see the whole layout.

The hash-tag rule. A tenant's name sits in braces, ``{t}``: Redis Cluster hashes only what is
inside the first ``{...}`` of a key, so all keys carrying ``{t}`` live in one slot. That is what
lets one Lua script or MULTI touch a tenant's store, its key material, its consent state and its
deletion marker together (``tenancy:{t}:deleted`` is checked inside the store's and the key
store's scripts). Keys without a tenant (``tenancy:tenants``, ``privacy:applied:...``) are
global and never touched together with a tenant's keys in one script.

Who may read what:

* ``t:{t}:`` -- the tenant's store, its own data. The tenant's Redis ACL user gets exactly
  ``~t:{t}:*`` (``store_pattern``; ``streams.tenancy.onboarding.redis_acl_rules``), read-only.
* ``k:{t}:`` -- pipeline-only: key material, consent state, receipts, counts, fences. Never
  granted to a tenant's user; staff principals get read-only patterns on the receipts, the
  request index and the stats (``streams.tenancy.principals``).
* ``tenancy:``, ``privacy:``, ``api:``, ``audit:``, ``k:dlq:`` -- the operator's; ``audit:{trail}:pub``
  is read by auditors (``streams.tenancy.principals``).

Rate limits keep no Redis keys: the API's token buckets are per process and in memory
(``streams.api.limits``).

Every string here is stored data: changing one orphans what is already in Redis.
``tests/unit/test_keyspace.py`` pins each builder's output. Bottom layer: imports nothing.
"""

from __future__ import annotations

# --------------------------------------------------------------------------- t:{t}: the tenant's store


def store_prefix(tenant: str) -> str:
    """The Redis prefix of a tenant's store (``t:{t}:``); not the Kafka one (``tenant.<t>.``)."""
    return f"t:{{{tenant}}}:"


def store_pattern(tenant: str) -> str:
    """The key pattern of a tenant's store: what its Redis ACL user is limited to, what a purge scans."""
    return f"{store_prefix(tenant)}*"


def event_key(tenant: str, event_id: str) -> str:
    """The clean event document (JSON); writes are idempotent by event id."""
    return f"{store_prefix(tenant)}ev:{event_id}"


def subject_index(tenant: str, subject: str) -> str:
    """ZSET of event ids of one subject, scored by event time (ms)."""
    return f"{store_prefix(tenant)}subj:{subject}"


def type_index(tenant: str, event_type: str) -> str:
    """ZSET of event ids of one event type, scored by event time (ms): query by type and time."""
    return f"{store_prefix(tenant)}type:{event_type}"


def time_index(tenant: str) -> str:
    """ZSET of all the tenant's event ids, scored by event time (ms)."""
    return f"{store_prefix(tenant)}time"


# --------------------------------------------------------------------------- k:{t}: pipeline-only, per tenant


def pipeline_prefix(tenant: str) -> str:
    """The pipeline-only keyspace of a tenant (``k:{t}:``): never granted to the tenant's ACL user."""
    return f"k:{{{tenant}}}:"


def tenant_hash_key(tenant: str) -> str:
    """HASH of the tenant key's versions, wrapped by the master key (``streams.privacy.keys``)."""
    return f"{pipeline_prefix(tenant)}tenant"


def subject_key_name(tenant: str, subject: str) -> str:
    """STRING: one subject's key, wrapped by the tenant key; deleting it is the erasure."""
    return f"{pipeline_prefix(tenant)}subj:{subject}"


def check_key_name(tenant: str) -> str:
    """The tenant's master-key check record (``streams.privacy.keys.MasterKeyCheck``)."""
    return f"{pipeline_prefix(tenant)}check"


def pseudonym_key(tenant: str) -> str:
    """The tenant's wrapped pseudonym key (``streams.privacy.pseudonyms``)."""
    return f"{pipeline_prefix(tenant)}pseudonym"


def consent_key(tenant: str, pseudonym: str) -> str:
    """A subject's consent state, by pseudonym (``streams.consent.store``)."""
    return f"{pipeline_prefix(tenant)}consent:{pseudonym}"


def receipt_key(tenant: str, request_id: str) -> str:
    """The receipt of one privacy request."""
    return f"{pipeline_prefix(tenant)}receipt:{request_id}"


def requests_index(tenant: str) -> str:
    """The index of the tenant's privacy requests."""
    return f"{pipeline_prefix(tenant)}requests"


def inflight_key(tenant: str) -> str:
    """ZSET of the tenant's batches between store write and topic acknowledgement (the erasure fence)."""
    return f"{pipeline_prefix(tenant)}inflight"


def stats_key(tenant: str) -> str:
    """HASH of the tenant's counts: the operator's, not the tenant's data."""
    return f"{pipeline_prefix(tenant)}stats"


def dlq_subject_key(tenant: str, pseudonym: str) -> str:
    """Pseudonym -> wrapped subject id of a dead-lettered event (``streams.dlq.subjects``)."""
    return f"{pipeline_prefix(tenant)}dlqsubj:{pseudonym}"


def redrive_guard_key(tenant: str, event_id: str) -> str:
    """Set (15 min) when a redrive sends an event back (``streams.dlq.redrive``): sent once."""
    return f"{pipeline_prefix(tenant)}redrive:{event_id}"


def parked_requests_key(tenant: str) -> str:
    """LIST of the tenant's privacy requests parked by a fault of the tenant's own data, oldest first
    (``streams.erasure.parking``): each wrapped by the master key, since a request names its subject."""
    return f"{pipeline_prefix(tenant)}parked"


# --------------------------------------------------------------------------- tenancy:


#: HASH of tenant records (``streams.tenancy.registry``).
TENANTS_KEY = "tenancy:tenants"
#: SET of deleted tenant names: deletion wins over STREAMS_TENANTS.
DELETED_KEY = "tenancy:deleted"
#: Receipts of tenant operations (create, delete).
RECEIPTS_KEY = "tenancy:receipts"


def deleted_marker(tenant: str) -> str:
    """Set while a tenant is deleted. Its hash tag is the tenant's (``{t}``), so scripts writing the
    tenant's store or key material can check it atomically (Redis Cluster: same slot); outside
    ``k:{t}:`` and ``t:{t}:``, so purging the tenant's keys and data leaves it in place."""
    return f"tenancy:{{{tenant}}}:deleted"


# --------------------------------------------------------------------------- privacy: applying requests


#: SET of ``<tenant>|<request id>`` erasures waiting for an AOF rewrite (``streams.erasure.executor``).
PENDING_AOF_KEY = "privacy:pending-aof"


#: SET of the tenants that have parked privacy requests (``streams.erasure.parking``): their events
#: are set aside until the requests are carried out.
PARKED_TENANTS_KEY = "privacy:parked-tenants"


def applied_key(topic: str, partition: int) -> str:
    """The offset up to which a privacy-requests partition is applied."""
    return f"privacy:applied:{topic}:{partition}"


def request_reader_lease_key(topic: str, partition: int) -> str:
    """The lease of the one worker applying a privacy-requests partition."""
    return f"privacy:lease:{topic}:{partition}"


# --------------------------------------------------------------------------- k:dlq: the DLQ's own keys


def dlq_keys_key(topic: str) -> str:
    """The DLQ topic's wrapped payload keys (``streams.dlq.keys``)."""
    return f"k:dlq:{topic}:keys"


# --------------------------------------------------------------------------- audit:


def audit_signer_key(trail: str, writer: str) -> str:
    """A writer's wrapped signing key for an audit trail."""
    return f"audit:{{{trail}}}:signer:{writer}"


def audit_public_key(trail: str) -> str:
    """The Redis key an auditor needs read access to (HGETALL) to verify ``trail``."""
    return f"audit:{{{trail}}}:pub"


# --------------------------------------------------------------------------- api: API keys


#: SET of operator key ids.
API_OPERATORS_SET = "api:operators"
#: Prefix of the API key records (``api:key:<id>``), scanned to list them.
API_KEY_PREFIX = "api:key:"


def api_key_hash_key(key_id: str) -> str:
    """HASH of one API key (its hash, tenant, role)."""
    return f"{API_KEY_PREFIX}{key_id}"


def api_tenant_set_key(tenant: str) -> str:
    """SET of a tenant's API key ids (braces: the tenant's hash tag, like its other keys)."""
    return f"api:tenant:{{{tenant}}}"
