"""Credentials of the project's staff roles, each with only the rights its row in the README's
security model lists (DESIGN decision 8): the privacy officer and the auditor.

Tenant principals (a tenant's consumers and producers) are made by ``onboarding``; the
broker's own ones (``broker``, ``controller``) by the stack; the pipeline's worker and the
operator use the credential in ``STREAMS_KAFKA_USERNAME`` / ``STREAMS_REDIS_URL``.

- ``privacy-officer``: files privacy requests and reads their receipts and the compliance
  reports. Kafka: write and describe ``privacy.requests``, nothing else (it reads no event,
  writes no audit record, cannot forge an erasure's effect). Redis: reads of the tenant
  registry, receipts, request indexes and counts only, never key material or tenant data.
- ``auditor``: reads and verifies the audit trail. Kafka: read and describe the ``audit``
  topic and read consumer groups starting ``streams-audit-read-``; Redis: read the published
  audit public keys (``audit:{<trail>}:pub``) only; nothing to write anywhere.

``create`` is idempotent and shows a password only when it makes one; ``rotate`` replaces it
and ends the role's open Redis sessions (the broker ends Kafka sessions within
``connections.max.reauth.ms``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Callable

import redis
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient,
                                   ResourcePatternType, ResourceType)

from streams import keyspace as ks
from streams.connections import Purpose, admin_client, redis_client
from streams.settings import Settings
from streams.tenancy.credentials import (TIMEOUT, delete_scram_user, save_redis_acl, scram_user_exists,
                                        upsert_scram_user, wait_all)
from streams.tenancy.exceptions import OnboardingError

# `streams audit verify` reads with assign() under a throwaway group of this prefix (streams.audit.log).
AUDITOR_GROUP_PREFIX = "streams-audit-read-"


@dataclass(frozen=True)
class StaffRole:
    name: str
    summary: str
    acls: Callable[[Settings, str], list[AclBinding]]
    redis_rules: tuple[str, ...]  # ACL SETUSER rules after "reset"; empty: no Redis user


def _allow(rtype: ResourceType, name: str, pattern: ResourcePatternType, principal: str,
           *ops: AclOperation) -> list[AclBinding]:
    return [AclBinding(rtype, name, pattern, principal, "*", op, AclPermissionType.ALLOW) for op in ops]


def _officer_acls(s: Settings, principal: str) -> list[AclBinding]:
    return _allow(ResourceType.TOPIC, s.requests_topic, ResourcePatternType.LITERAL, principal,
                  AclOperation.WRITE, AclOperation.DESCRIBE)


def _auditor_acls(s: Settings, principal: str) -> list[AclBinding]:
    return (_allow(ResourceType.TOPIC, s.audit_topic, ResourcePatternType.LITERAL, principal,
                   AclOperation.READ, AclOperation.DESCRIBE)
            + _allow(ResourceType.GROUP, AUDITOR_GROUP_PREFIX, ResourcePatternType.PREFIXED, principal,
                     AclOperation.READ))


ROLES: dict[str, StaffRole] = {
    "privacy-officer": StaffRole(
        "privacy-officer", "files privacy requests; reads receipts and compliance reports",
        _officer_acls,
        # Read-only key patterns (%R~): the registry, receipts, request indexes and counts, of every
        # tenant (the keyspace's builders with "*" for the tenant). Never k:{t}:tenant or k:{t}:subj:*
        # (key material) nor t:{t}:* (tenant data).
        ("on", "resetkeys", f"%R~{ks.TENANTS_KEY}", f"%R~{ks.DELETED_KEY}", f"%R~{ks.receipt_key('*', '*')}",
         f"%R~{ks.requests_index('*')}", f"%R~{ks.stats_key('*')}",
         "resetchannels", "-@all", "+get", "+mget", "+hget", "+hgetall", "+hkeys", "+hvals", "+hexists", "+smembers",
         "+zrange", "+zrangebyscore", "+zrevrange", "+zcard", "+exists", "+type", "+ping"),
    ),
    "auditor": StaffRole(
        "auditor", "reads and verifies the audit trail", _auditor_acls,
        # The writers' public keys, to check signatures; never a private key (audit:{t}:signer:*).
        ("on", "resetkeys", f"%R~{ks.audit_public_key('*')}", "resetchannels", "-@all", "+hget", "+hgetall", "+hkeys",
         "+exists", "+type", "+ping"),
    ),
}


def _password() -> str:
    return secrets.token_urlsafe(24)


class PrincipalService:
    def __init__(self, settings: Settings, client: redis.Redis, admin: AdminClient,
                 audit: Any | None = None, actor: str = "streams") -> None:
        self.settings = settings
        self.r = client
        self.admin = admin
        self.audit = audit
        self.actor = actor

    @staticmethod
    def role(name: str) -> StaffRole:
        if name not in ROLES:
            raise OnboardingError(f"unknown role {name!r}: one of {', '.join(ROLES)}")
        return ROLES[name]

    def _require_secure(self) -> None:
        if not self.settings.kafka_secure:
            raise OnboardingError("staff principals need the secure broker (STREAMS_KAFKA_SECURITY=SASL_PLAINTEXT): "
                                  "a PLAINTEXT broker has no users or ACLs")

    def create(self, name: str) -> dict[str, Any]:
        self._require_secure()
        role = self.role(name)
        principal = f"User:{role.name}"
        credentials: dict[str, Any] = {}
        if not self._scram_exists(role.name):
            password = _password()
            self._upsert_scram(role.name, password)
            credentials["kafka"] = {"username": role.name, "password": password, "mechanism": "SCRAM-SHA-512",
                                    "bootstrap": self.settings.kafka_bootstrap}
        wait_all(self.admin.create_acls(role.acls(self.settings, principal), request_timeout=TIMEOUT), "creating ACLs")
        if role.redis_rules:
            if self.r.acl_getuser(role.name) is None:
                password = _password()
                self.r.execute_command("ACL", "SETUSER", role.name, "reset", *role.redis_rules, f">{password}")
                credentials["redis"] = {"username": role.name, "password": password}
            else:
                self.r.execute_command("ACL", "SETUSER", role.name, *role.redis_rules)
            self._acl_save()
        self._audit("principal.create", role.name, {"new_credentials": ",".join(sorted(credentials))})
        return {"role": role.name, "summary": role.summary, "credentials": credentials,
                "acls": [f"{b.operation.name} {b.restype.name} {b.name}" for b in role.acls(self.settings, principal)]}

    def rotate(self, name: str) -> dict[str, Any]:
        self._require_secure()
        role = self.role(name)
        if not self._scram_exists(role.name):
            raise OnboardingError(f"no {role.name} principal; `streams principals create {role.name}` first")
        credentials: dict[str, Any] = {}
        password = _password()
        self._upsert_scram(role.name, password)
        credentials["kafka"] = {"username": role.name, "password": password}
        if role.redis_rules:
            password = _password()
            self.r.execute_command("ACL", "SETUSER", role.name, "reset", *role.redis_rules, f">{password}")
            self.r.execute_command("CLIENT", "KILL", "USER", role.name)
            self._acl_save()
            credentials["redis"] = {"username": role.name, "password": password}
        self._audit("principal.rotate", role.name, {"kinds": ",".join(sorted(credentials))})
        return {"role": role.name, "credentials": credentials}

    def delete(self, name: str) -> dict[str, Any]:
        self._require_secure()
        role = self.role(name)
        f = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, f"User:{role.name}", None,
                             AclOperation.ANY, AclPermissionType.ANY)
        deleted_acls = sum(len(x.result()) for x in self.admin.delete_acls([f], request_timeout=TIMEOUT).values())
        existed = delete_scram_user(self.admin, role.name)
        redis_deleted = bool(self.r.acl_deluser(role.name)) if role.redis_rules else False
        self._acl_save()
        self._audit("principal.delete", role.name, {"acls": deleted_acls})
        return {"role": role.name, "kafka_user_deleted": existed, "acls_deleted": deleted_acls,
                "redis_user_deleted": redis_deleted}

    def list(self) -> list[dict[str, Any]]:
        out = []
        for role in ROLES.values():
            exists = self.settings.kafka_secure and self._scram_exists(role.name)
            out.append({"role": role.name, "summary": role.summary, "exists": bool(exists)})
        return out

    # ------------------------------------------------------------------ helpers

    def _scram_exists(self, user: str) -> bool:
        return scram_user_exists(self.admin, user)

    def _upsert_scram(self, user: str, password: str) -> None:
        upsert_scram_user(self.admin, user, password)

    def _acl_save(self) -> None:
        save_redis_acl(self.r)

    def _audit(self, action: str, role: str, details: dict[str, Any]) -> None:
        if self.audit is not None:
            self.audit.append(action, None, None, f"staff principal {role}", {"actor": self.actor, "role": role,
                                                                               **details})


def build_principals(settings: Settings, actor: str, audit: Any | None = None) -> PrincipalService:
    client = redis_client(settings, Purpose.ADMIN)
    return PrincipalService(settings, client, admin_client(settings), audit, actor)
