"""Onboarding a tenant in one step, and rotating, describing and deleting it (the control plane).

``create`` gives a tenant everything it needs, each part idempotent, so re-running it
completes a half-done onboarding without touching what exists (existing credentials are
never replaced). Credentials are made and shown only by the call that onboards the tenant
(before it is in the registry); a re-run on an onboarded tenant repairs topics, ACLs and
Redis rules but makes and shows no secret: an operator who may re-run ``create`` must not
thereby get a key to the tenant's data. New keys for an onboarded tenant are an explicit,
audited action (``rotate_credentials``, ``streams apikeys create --tenant``):

- its topics (``tenant.<t>.events``) with their configs;
- a Kafka SCRAM user ``tenant-<t>`` (its consumers) with prefixed ACLs: read and describe
  topics and consumer groups starting ``tenant.<t>.``, nothing else (the broker's
  StandardAuthorizer denies whatever no ACL allows);
- a Kafka SCRAM user ``producer-<t>`` (its producers): write and describe the one topic
  ``events.raw.<t>``, nothing else (no read, no transactional id, no other topic), so the
  broker, not the worker's trust, binds a producer to its tenant;
- a Redis ACL user ``tenant-<t>`` limited to the keys ``t:{<t>}:*`` and to an allowlist of
  bounded, key-scoped read commands (``TENANT_REDIS_COMMANDS``);
- API keys with roles (shown once, stored hashed);
- its consent regime and its tenant key (wrapped by the master key);
- Kafka client quotas of its two principals when asked (``quota``, ``streams.tenancy.quotas``):
  produce and fetch byte rates and a request percentage, enforced by the broker; a re-run with a
  quota changes them, a re-run without one leaves them; ``describe`` reads them back from the
  broker and ``delete`` removes them.

``delete`` erases all of the tenant's data and shreds its keys, with a receipt whose steps
carry their times. Credentials are random (``secrets``) and appear only in the return value
of the call that made them: never in logs, the audit trail or Redis in the clear.

Long because (~450 lines) create, rotate, describe and delete are one life cycle over the same
principals, ACLs, Redis user and registry record, and share ``TenantService``'s helpers for them.
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import redis
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from streams.api.api_keys import ApiKeyStore, Role
from streams.connections import Purpose, admin_client, redis_client
from streams.erasure.aof import rewrite_aof
from streams.keyspace import PARKED_TENANTS_KEY, store_pattern
from streams.ops.topics import ensure_topics, tenant_topics
from streams.privacy.keys import KeyStore
from streams.settings import Settings
from streams.sinks.base import Sink
from streams.sinks.exceptions import SinkError
from streams.sinks.registry import SinkDeps, build_sinks
from streams.tenancy.credentials import (delete_scram_user, save_redis_acl, scram_user_exists, upsert_scram_user,
                                        wait_all)
from streams.tenancy.exceptions import OnboardingError, QuotaUnsupported, TenantNotFound
from streams.tenancy.names import validate_tenant_name
from streams.tenancy.quotas import ClientQuotas, TenantQuota, describe_tenant, quota_ops, remove_all_ops
from streams.tenancy.registry import REGIMES, TenantRecord, TenantRegistry, principal_names, producer_principal

log = logging.getLogger(__name__)

TIMEOUT = 30.0
DIRECTORY_TTL = 2.0  # how often workers re-read the tenant registry (streams.tenancy.registry.TenantDirectory)


def kafka_resource_prefix(tenant: str) -> str:
    """The prefix of a tenant's topics and consumer groups in its ACLs (the dot ends the name,
    so tenant ``acme`` never matches ``acme-eu``'s resources)."""
    return f"tenant.{tenant}."


def acl_bindings(tenant: str) -> list[AclBinding]:
    user, _ = principal_names(tenant)
    principal = f"User:{user}"
    out = []
    for rtype in (ResourceType.TOPIC, ResourceType.GROUP):
        for op in (AclOperation.READ, AclOperation.DESCRIBE):
            out.append(AclBinding(rtype, kafka_resource_prefix(tenant), ResourcePatternType.PREFIXED, principal, "*",
                                  op, AclPermissionType.ALLOW))
    return out


def producer_acl_bindings(settings: Settings, tenant: str) -> list[AclBinding]:
    """Write (and describe, which producers need for metadata) on the tenant's raw topic only."""
    principal = f"User:{producer_principal(tenant)}"
    return [AclBinding(ResourceType.TOPIC, settings.tenant_raw_topic(tenant), ResourcePatternType.LITERAL,
                       principal, "*", op, AclPermissionType.ALLOW)
            for op in (AclOperation.WRITE, AclOperation.DESCRIBE)]


# What the tenant read path needs, and nothing else: reads of one key of the store's types (JSON
# documents in strings, indexes in sorted sets), each of bounded cost. An allowlist, not "+@read
# minus what we know is bad": +@read also holds DBSIZE, INFO-like and metadata commands that
# ignore key patterns (they showed other tenants' volume) and multi-key set algebra
# (ZUNION/ZINTER/SUNION...) or SORT that can run for seconds and stall the shared Redis.
# Bounded (issue 9): every command here does O(1) or O(log N) work on one key and answers one
# value, so no single call holds Redis' one thread for long. Left out, because one call's cost
# grows with the tenant's data (the store never trims a tenant's indexes) or with its argument
# count, and Redis runs it to the end before anyone else: ZRANGE/ZRANGEBYSCORE/ZREVRANGE/
# ZREVRANGEBYSCORE (a LIMIT cannot be required by an ACL; ZRANGE 0 -1 of a 200k-entry index took
# the pipeline's Redis p99 to 20-55 ms, measured by bench/tenant_redis_bench.py), MGET, EXISTS and
# ZMSCORE with many keys or members (50k: up to 82 ms). Tenants page through their events with the
# HTTP API (limit <= 1000) and read documents with GET, pipelined if they like: Redis serves other
# clients between the pipelined commands.
TENANT_REDIS_COMMANDS = (
    "get", "strlen", "type", "ttl", "pttl",
    "zcard", "zcount", "zscore", "zrank", "zrevrank", "ping",
)


def redis_acl_rules(tenant: str) -> list[str]:
    """``ACL SETUSER`` rules: the allowlisted reads on the tenant's keyspace and nothing else.
    They reset keys, channels and commands but not passwords, so applying them again repairs
    a user."""
    return ["on", "resetkeys", f"~{store_pattern(tenant)}", "resetchannels", "-@all",
            *(f"+{c}" for c in TENANT_REDIS_COMMANDS)]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _password() -> str:
    return secrets.token_urlsafe(24)


@dataclass
class _Onboarding:
    """One run of ``TenantService.create``: the tenant, its record if onboarded already, and what was done."""

    tenant: str
    existing: TenantRecord | None
    kafka_user: str
    redis_user: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    credentials: dict[str, Any] = field(default_factory=dict)

    def step(self, name: str, **detail: Any) -> None:
        self.steps.append({"step": name, "at_ms": _now_ms(), **detail})


def _create_result(ob: _Onboarding, record: TenantRecord) -> dict[str, Any]:
    tenant = ob.tenant
    out = {"tenant": tenant, "status": "created" if ob.existing is None else "exists", "regime": record.regime,
           "steps": ob.steps, "credentials": ob.credentials}
    if ob.existing is not None:
        out["note"] = (f"{tenant} was onboarded already: no credential was made or shown. A new API key: "
                       f"`streams apikeys create --tenant {tenant} --role ROLE`; new passwords and keys: "
                       "rotate-credentials")
    return out


class TenantService:
    def __init__(self, settings: Settings, client: redis.Redis, admin: AdminClient, keys: KeyStore,
                 api_keys: ApiKeyStore, audit: Any | None = None, actor: str = "streams",
                 quotas: ClientQuotas | None = None, sinks: Sequence[Sink] | None = None) -> None:
        """``sinks``: every sink in write order (default: ``streams.sinks.registry``'s, for deletion)."""
        self.settings = settings
        self.sinks = list(sinks) if sinks is not None else build_sinks(SinkDeps(settings, client=client, admin=admin))
        self.quotas = quotas if quotas is not None else ClientQuotas(settings)
        self.r = client
        self.admin = admin
        self.keys = keys
        self.api_keys = api_keys
        self.registry = TenantRegistry(client)
        self.audit = audit
        self.actor = actor
        self.fence_seconds = DIRECTORY_TTL + 1.0

    # ------------------------------------------------------------------ create

    def create(self, name: str, regime: str = "opt_out", roles: Iterable[str] = ("reader",),
               quota: TenantQuota | None = None) -> dict[str, Any]:
        """Onboard ``name`` (or complete/repair a half-done onboarding); steps in the order of the module docstring.

        Checks the arguments, then: topics, Kafka users, ACLs and quotas, the Redis
        user, API keys, the tenant key, the registry record, the audit record.
        """
        tenant, wanted_roles, existing = self._check_create(name, regime, roles, quota)
        ob = _Onboarding(tenant, existing, *principal_names(tenant))
        topics = ensure_topics(self.settings, tenant_topics(self.settings, tenant))
        ob.step("topics", **topics)
        self._onboard_kafka(ob, quota)
        self._onboard_redis_user(ob)
        self._onboard_api_keys(ob, wanted_roles)
        version = self.keys.ensure_tenant_key(tenant)
        ob.step("tenant_key", version=version)
        record = TenantRecord(tenant, regime if existing is None else existing.regime,
                              existing.created_at_ms if existing else _now_ms(), ob.kafka_user, ob.redis_user)
        self.registry.put(record)
        ob.step("registry", regime=record.regime)
        self._audit("tenant.create", tenant, "onboarded" if existing is None else "onboarding re-run",
                    {"steps": ",".join(s["step"] for s in ob.steps), "new_credentials": ",".join(sorted(ob.credentials)),
                     **({"quota": quota.text()} if quota else {})})
        return _create_result(ob, record)

    def _check_create(self, name: str, regime: str, roles: Iterable[str],
                      quota: TenantQuota | None) -> tuple[str, list[Role], TenantRecord | None]:
        """The valid tenant name, the roles of its first keys and its registry record (None if new); or raises."""
        tenant = validate_tenant_name(name)
        if regime not in REGIMES:
            raise OnboardingError(f"regime must be one of {', '.join(REGIMES)}, got {regime!r}")
        if quota and not self.settings.kafka_secure:
            # Every client of a PLAINTEXT broker is User:ANONYMOUS: a per-tenant quota would bind nobody.
            raise QuotaUnsupported("quotas need the secure broker (STREAMS_KAFKA_SECURITY=SASL_PLAINTEXT): "
                                  "on a PLAINTEXT broker every client is the same anonymous user")
        wanted_roles = [Role(r) for r in roles]
        if Role.OPERATOR in wanted_roles:
            raise OnboardingError("a tenant key cannot have the operator role")
        existing = self.registry.get(tenant)
        if existing is not None and existing.status == "deleting":
            raise OnboardingError(f"tenant {tenant} is being deleted; run `streams tenants delete {tenant}` again first")
        if existing is None:
            self.registry.unmark_deleted(tenant)  # created again after a delete: served again
        return tenant, wanted_roles, existing

    def _new_scram_password(self, ob: _Onboarding, user: str) -> str | None:
        """Make SCRAM user ``user`` with a new password and return it, on first onboarding only (else None)."""
        if ob.existing is None and not self._kafka_user_exists(user):  # no secret on a re-run
            password = _password()
            self._upsert_scram(user, password)
            return password
        return None

    def _onboard_kafka(self, ob: _Onboarding, quota: TenantQuota | None) -> None:
        """The consumer and producer SCRAM users, their ACLs and quotas (only on a secure broker)."""
        tenant = ob.tenant
        if not self.settings.kafka_secure:
            ob.step("kafka_user", skipped="broker without SASL/ACLs (STREAMS_KAFKA_SECURITY=PLAINTEXT)")
            return
        password = self._new_scram_password(ob, ob.kafka_user)
        if password is not None:
            ob.credentials["kafka"] = {"username": ob.kafka_user, "password": password,
                                       "mechanism": "SCRAM-SHA-512", "bootstrap": self.settings.kafka_bootstrap,
                                       "topics_and_groups_prefix": kafka_resource_prefix(tenant)}
        ob.step("kafka_user", created=password is not None)
        producer = producer_principal(tenant)
        password = self._new_scram_password(ob, producer)
        if password is not None:
            ob.credentials["producer"] = {"username": producer, "password": password,
                                          "mechanism": "SCRAM-SHA-512", "bootstrap": self.settings.kafka_bootstrap,
                                          "topic": self.settings.tenant_raw_topic(tenant)}
        ob.step("producer_user", created=password is not None)
        self._create_acls(tenant)
        ob.step("kafka_acls", bindings=len(acl_bindings(tenant)) + len(producer_acl_bindings(self.settings, tenant)))
        if quota:
            self.quotas.alter(quota_ops(tenant, quota))
            ob.step("kafka_quotas", **{k: v for k, v in quota.parts})

    def _onboard_redis_user(self, ob: _Onboarding) -> None:
        """The tenant's Redis ACL user: made with a password on first onboarding, its rules re-asserted after."""
        if ob.existing is None and self.r.acl_getuser(ob.redis_user) is None:  # no secret on a re-run
            password = _password()
            self.r.execute_command("ACL", "SETUSER", ob.redis_user, "reset", *redis_acl_rules(ob.tenant),
                                   f">{password}")
            ob.credentials["redis"] = {"username": ob.redis_user, "password": password,
                                       "key_pattern": store_pattern(ob.tenant)}
            ob.step("redis_user", created=True, persisted=self._acl_save())
        else:
            # Re-assert the rules (not the password): a re-run repairs a user edited by hand (a missing
            # user is made without a password: nobody logs in as it before rotate_credentials).
            self.r.execute_command("ACL", "SETUSER", ob.redis_user, *redis_acl_rules(ob.tenant))
            ob.step("redis_user", created=False, persisted=self._acl_save())

    def _onboard_api_keys(self, ob: _Onboarding, wanted_roles: list[Role]) -> None:
        """One API key per wanted role the tenant lacks, on first onboarding only."""
        have = {k["role"] for k in self.api_keys.list(ob.tenant)}
        new_keys = []
        for role in wanted_roles:
            if ob.existing is None and role.value not in have:  # an onboarded tenant gets no key here
                key_id, token = self.api_keys.create(ob.tenant, role, label="onboarding")
                new_keys.append({"key_id": key_id, "role": role.value, "token": token})
        if new_keys:
            ob.credentials["api_keys"] = new_keys
        ob.step("api_keys", created=[k["role"] for k in new_keys],
                **({"not_made": sorted({r.value for r in wanted_roles} - have)} if ob.existing is not None else {}))

    # ------------------------------------------------------------------ read

    def list(self) -> list[dict[str, Any]]:
        return [{"tenant": r.name, "regime": r.regime, "status": r.status, "created_at_ms": r.created_at_ms}
                for r in self.registry.all()]

    def describe(self, name: str) -> dict[str, Any]:
        tenant = validate_tenant_name(name)
        record = self.registry.get(tenant)
        if record is None:
            raise TenantNotFound(f"no tenant {tenant}")
        topics = {}
        md = self.admin.list_topics(timeout=TIMEOUT).topics
        for spec in tenant_topics(self.settings, tenant):
            topics[spec.name] = len(md[spec.name].partitions) if spec.name in md else "missing"
        out: dict[str, Any] = {
            "tenant": tenant, "regime": record.regime, "status": record.status, "created_at_ms": record.created_at_ms,
            "topics": topics, "tenant_key_version": self.keys.tenant_key_version(tenant),
            "api_keys": self.api_keys.list(tenant),
            "redis_user": {"name": record.redis_user, "exists": self.r.acl_getuser(record.redis_user) is not None},
        }
        if self.settings.kafka_secure:
            out["kafka_user"] = {"name": record.kafka_user, "exists": self._kafka_user_exists(record.kafka_user),
                                 "acls": [f"{b.operation.name} {b.restype.name} {b.name}*"
                                          for b in self._acls_of(record.kafka_user)]}
            producer = producer_principal(tenant)
            out["producer_user"] = {"name": producer, "exists": self._kafka_user_exists(producer),
                                    "acls": [f"{b.operation.name} {b.restype.name} {b.name}"
                                             for b in self._acls_of(producer)]}
            out["quotas"] = describe_tenant(self.quotas, tenant)
        return out

    # ------------------------------------------------------------------ rotate

    def rotate_credentials(self, name: str) -> dict[str, Any]:
        """New Kafka and Redis passwords and new API keys (same roles); the old ones stop working."""
        tenant = validate_tenant_name(name)
        record = self.registry.get(tenant)
        if record is None or record.status != "active":
            raise TenantNotFound(f"no tenant {tenant}")
        credentials: dict[str, Any] = {}
        if self.settings.kafka_secure:
            password = _password()
            self._upsert_scram(record.kafka_user, password)
            credentials["kafka"] = {"username": record.kafka_user, "password": password}
            password = _password()
            self._upsert_scram(producer_principal(tenant), password)
            credentials["producer"] = {"username": producer_principal(tenant), "password": password}
        password = _password()
        self.r.execute_command("ACL", "SETUSER", record.redis_user, *redis_acl_rules(tenant),
                               "resetpass", f">{password}")
        self.r.execute_command("CLIENT", "KILL", "USER", record.redis_user)  # open sessions end with the old password
        self._acl_save()
        credentials["redis"] = {"username": record.redis_user, "password": password}
        roles = sorted({k["role"] for k in self.api_keys.list(tenant)}) or ["reader"]
        revoked = self.api_keys.revoke_tenant(tenant)
        credentials["api_keys"] = []
        for role in roles:
            key_id, token = self.api_keys.create(tenant, Role(role), label="rotation")
            credentials["api_keys"].append({"key_id": key_id, "role": role, "token": token})
        self._audit("tenant.rotate_credentials", tenant, "credentials rotated",
                    {"kinds": ",".join(sorted(credentials)), "api_keys_revoked": revoked})
        return {"tenant": tenant, "rotated_at_ms": _now_ms(), "credentials": credentials}

    # ------------------------------------------------------------------ delete

    def delete(self, name: str) -> dict[str, Any]:
        """Erase everything of the tenant; every step is idempotent, so a failed run is re-run."""
        tenant = validate_tenant_name(name)
        record = self.registry.get(tenant)
        if record is None and tenant in self.settings.tenants and tenant not in self.registry.deleted():
            # Named by STREAMS_TENANTS only: deleted like an onboarded one. The deleted mark wins over
            # the configuration, so no worker serves it again until `tenants create` brings it back.
            kafka_user, redis_user = principal_names(tenant)
            record = TenantRecord(tenant, self.settings.regime_of(tenant), 0, kafka_user, redis_user)
        if record is None:
            raise TenantNotFound(f"no tenant {tenant}")
        receipt_id = str(uuid.uuid4())
        steps: list[dict[str, Any]] = []

        def step(name: str, **detail: Any) -> None:
            steps.append({"step": name, "at_ms": _now_ms(), **detail})

        started = _now_ms()
        # 1. Workers stop delivering its events (they re-read the registry every 2 s): from here
        #    on they go to the DLQ as unknown_tenant.
        self.registry.mark_deleted(tenant)
        self.registry.put(TenantRecord(record.name, record.regime, record.created_at_ms, record.kafka_user,
                                       record.redis_user, status="deleting"))
        step("registry", status="deleting")
        # Workers re-read the directory every DIRECTORY_TTL s; a batch of the tenant already in
        # flight can no longer write its store or make keys (the marker is checked atomically), and
        # it finishes its topic write before the topic is deleted below.
        time.sleep(self.fence_seconds)
        step("fence", waited_s=self.fence_seconds)
        # 2. Crypto-shredding first: every token and hash of the tenant, anywhere, is irreversible now.
        step("keys", deleted_keys=self.keys.destroy_tenant(tenant))
        step("api_keys", revoked=self.api_keys.revoke_tenant(tenant))
        if self.settings.kafka_secure:
            producer = producer_principal(tenant)
            step("kafka_acls", deleted=self._delete_acls(record.kafka_user) + self._delete_acls(producer))
            self.quotas.alter(remove_all_ops(tenant))
            step("kafka_quotas", removed=True)
            step("kafka_user", deleted=self._delete_scram(record.kafka_user))
            step("producer_user", deleted=self._delete_scram(producer))
        deleted_user = int(self.r.acl_deluser(record.redis_user) or 0)  # also ends its open sessions
        step("redis_user", deleted=bool(deleted_user), persisted=self._acl_save())
        # Every sink's copy (streams.sinks.base): reverse write order, the store (the index) last.
        for sink in reversed(self.sinks):
            try:
                step(sink.drop_step, **sink.drop_tenant(tenant))
            except SinkError as exc:
                raise OnboardingError(f"deleting the tenant's {sink.name} copy failed: {exc}") from None
        # Key material and pipeline state once more: a worker may have written a count meanwhile.
        # Its parked privacy requests (k:{t}:parked) went with it; so does its entry in the set.
        self.keys.destroy_tenant(tenant)
        self.r.srem(PARKED_TENANTS_KEY, tenant)
        step("aof", **rewrite_aof(self.r))
        self.registry.remove(tenant)
        step("registry", status="removed", deleted_mark="kept: its events go to the DLQ as unknown_tenant")
        receipt = {"receipt_id": receipt_id, "type": "tenant.delete", "tenant": tenant, "requested_by": self.actor,
                   "started_at_ms": started, "completed_at_ms": _now_ms(), "status": "done", "steps": steps}
        self.registry.put_receipt(receipt)
        self._audit("tenant.delete", tenant, f"tenant deleted, receipt {receipt_id}",
                    {"receipt_id": receipt_id, "steps": ",".join(s["step"] for s in steps)})
        return receipt

    # ------------------------------------------------------------------ Kafka

    def _kafka_user_exists(self, user: str) -> bool:
        return scram_user_exists(self.admin, user)

    def _upsert_scram(self, user: str, password: str) -> None:
        upsert_scram_user(self.admin, user, password)

    def _delete_scram(self, user: str) -> bool:
        return delete_scram_user(self.admin, user)

    def _create_acls(self, tenant: str) -> None:
        wait_all(self.admin.create_acls(acl_bindings(tenant) + producer_acl_bindings(self.settings, tenant),
                                          request_timeout=TIMEOUT), "creating ACLs")

    def _filter(self, user: str) -> AclBindingFilter:
        return AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, f"User:{user}", None,
                                AclOperation.ANY, AclPermissionType.ANY)

    def _acls_of(self, user: str) -> list[AclBinding]:
        return list(self.admin.describe_acls(self._filter(user), request_timeout=TIMEOUT).result())

    def _delete_acls(self, user: str) -> int:
        futures = self.admin.delete_acls([self._filter(user)], request_timeout=TIMEOUT)
        return sum(len(f.result()) for f in futures.values())

    # ------------------------------------------------------------------ Redis

    def _acl_save(self) -> bool:
        return save_redis_acl(self.r)

    def _audit(self, action: str, tenant: str, reason: str, details: dict[str, Any]) -> None:
        if self.audit is not None:
            self.audit.append(action, tenant, None, reason, {"actor": self.actor, **details})


def build_service(settings: Settings, actor: str, audit_factory: Callable[[], Any] | None = None) -> TenantService:
    """The service as the CLI and the operator API use it (blocking clients)."""
    from streams.privacy.keys import LocalKeyFileProvider

    client = redis_client(settings, Purpose.ADMIN)
    keys = KeyStore(client, LocalKeyFileProvider(settings.master_key_file))
    audit = audit_factory() if audit_factory is not None else None
    return TenantService(settings, client, admin_client(settings), keys, ApiKeyStore(client), audit, actor)
