"""The audit rules of operator actions the CLI and the API share, on fake stores and a fake audit log.

API keys (``streams.tenancy.api_key_admin``) and tenant key rotation
(``streams.privacy.key_rotation``). The same rules run against Redis and a real
audit topic in tests/e2e/test_cli_apikeys.py and test_cli_errors.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from streams.api.api_keys import Role
from streams.audit.exceptions import AuditError
from streams.privacy.key_rotation import RotationNotAudited, rotate_tenant_key_audited
from streams.privacy.keys import RotationReport
from streams.tenancy.api_key_admin import TENANT_KEY_ROLES, AuditedApiKeys, KeyNotAudited


class FakeStore:
    def __init__(self) -> None:
        self.keys: dict[str, dict[str, Any]] = {}

    def create(self, tenant: str | None, role: Role, label: str = "") -> tuple[str, str]:
        key_id = f"{len(self.keys):012x}"
        self.keys[key_id] = {"key_id": key_id, "tenant": tenant, "role": Role(role).value, "label": label}
        return key_id, f"stk_{key_id}_secret"

    def revoke(self, key_id: str) -> bool:
        return self.keys.pop(key_id, None) is not None

    def list(self, tenant: str | None = None) -> list[dict[str, Any]]:
        return [k for k in self.keys.values() if tenant is None or k["tenant"] == tenant]


class FakeAudit:
    def __init__(self, fail: bool = False) -> None:
        self.fail, self.records = fail, []

    def append(self, action: str, tenant: str | None, subject: str | None, reason: str,
               details: dict[str, Any] | None = None) -> None:
        if self.fail:
            raise AuditError("audit topic not acknowledged")
        self.records.append((action, tenant, details))


def test_create_is_audited_with_id_and_role_never_the_token_or_label():
    store, audit = FakeStore(), FakeAudit()
    created = AuditedApiKeys(store, audit).create("acme", Role.READER, "support desk")
    assert created["token"].startswith("stk_") and created["key_id"] in store.keys
    assert audit.records == [("apikey.create", "acme", {"key_id": created["key_id"], "role": "reader"})]
    assert created["token"] not in repr(audit.records) and "support desk" not in repr(audit.records)


def test_a_key_whose_creation_cannot_be_audited_is_revoked_again():
    store = FakeStore()
    with pytest.raises(KeyNotAudited) as exc:
        AuditedApiKeys(store, FakeAudit(fail=True)).create(None, Role.OPERATOR)
    assert store.keys == {} and exc.value.kept is False
    assert str(exc.value).startswith("the key was not kept: its creation could not be audited: ")
    assert isinstance(exc.value, AuditError)


def test_a_revocation_stands_when_its_audit_fails():
    store = FakeStore()
    key_id, _ = store.create("acme", Role.PRIVACY)
    meta = dict(store.keys[key_id])
    with pytest.raises(KeyNotAudited) as exc:
        AuditedApiKeys(store, FakeAudit(fail=True)).revoke(meta)
    assert store.keys == {} and exc.value.kept is True
    assert f"API key {key_id} is revoked, but the audit record was not written" in str(exc.value)


def test_revoke_and_list_are_audited():
    store, audit = FakeStore(), FakeAudit()
    keys = AuditedApiKeys(store, audit)
    created = keys.create("acme", Role.DETOKENIZER)
    assert keys.list("acme")[0]["key_id"] == created["key_id"]
    meta = store.keys[created["key_id"]]
    assert keys.revoke(dict(meta)) == {**meta, "revoked": True}
    assert [r[0] for r in audit.records] == ["apikey.create", "apikey.list", "apikey.revoke"]
    assert audit.records[2][2] == {"key_id": created["key_id"], "role": "detokenizer", "existed": True}


def test_tenant_key_roles_are_every_role_but_operator():
    assert set(TENANT_KEY_ROLES) == {r.value for r in Role} - {Role.OPERATOR.value}


# ---------------------------------------------------------------- tenant key rotation


class FakeKeys:
    def __init__(self) -> None:
        self.rotations = 0

    def rotate_tenant_key(self, tenant: str) -> RotationReport:
        self.rotations += 1
        return RotationReport(tenant, 1, 2, 5, 1)


def test_a_rotation_is_audited_with_its_versions():
    audit = FakeAudit()
    report = rotate_tenant_key_audited(FakeKeys(), audit, "acme")  # type: ignore[arg-type]
    assert (report.old_version, report.new_version) == (1, 2)
    assert audit.records == [("key.rotate", "acme", {"old_version": 1, "new_version": 2, "rewrapped": 5,
                                                      "deleted_versions": 1})]


def test_a_rotation_whose_record_fails_stands_and_says_so():
    keys = FakeKeys()
    with pytest.raises(RotationNotAudited) as exc:
        rotate_tenant_key_audited(keys, FakeAudit(fail=True), "acme")  # type: ignore[arg-type]
    assert keys.rotations == 1 and exc.value.report.new_version == 2
    assert str(exc.value) == ("tenant acme's key was rotated to version 2, but its audit record was not written: "
                              "audit topic not acknowledged")
