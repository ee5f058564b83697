"""``streams apikeys``: create, list or revoke API keys of the HTTP API.

The arguments are checked here, before anything is opened; the actions and
their audit rules (a key whose creation cannot be audited is revoked again)
are ``streams.tenancy.api_key_admin.AuditedApiKeys``, which the API can use too.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

from streams.api.api_keys import Role
from streams.cli import deps
from streams.cli.base import A, K, R, Subparsers, actor, add_command, onboarded_tenant, ready, settings, writer
from streams.cli.errors import UsageError
from streams.settings import Settings
from streams.tenancy.api_key_admin import TENANT_KEY_ROLES

#: ``--role`` choices as the help lists them: operator first, then the tenant roles.
ROLE_CHOICES = (Role.OPERATOR.value, *TENANT_KEY_ROLES)


def register(sub: Subparsers) -> None:
    sp = add_command(
        sub, "apikeys", "create, list or revoke API keys of the HTTP API", cmd_apikeys,
        "API keys authenticate calls to the HTTP API served by each worker (Authorization: Bearer <token>). "
        "A key has one role: reader (read one tenant's clean events), detokenizer (also reveal tokens, "
        "audited), privacy (file the tenant's privacy requests; reads no data) or operator (manage tenants "
        "under /v1/tenants and read /metrics; reads no tenant data). Reader, detokenizer and privacy keys "
        "belong to one onboarded tenant (--tenant); operator keys to none.\n\n"
        "create --role ROLE [--tenant NAME] [--label TEXT]: make a key; its token is printed once (only a "
        "hash of it is stored: it cannot be shown again; revoke it and make another if it is lost).\n"
        "list [--tenant NAME]: keys' ids, roles, tenants, labels and creation times (never tokens or "
        "hashes).\n"
        "revoke KEY_ID: the key stops working at once, on every worker.\n\n"
        "Each action is written to the audit trail with the key's id and role (never its token).",
        needs=(R, K, A))
    sp.add_argument("action", choices=["create", "list", "revoke"])
    sp.add_argument("key_id", nargs="?", metavar="KEY_ID", help="revoke: the key's id (12 hex characters)")
    sp.add_argument("--role", choices=ROLE_CHOICES, help="create: the key's role")
    sp.add_argument("--tenant", help="create: the tenant of a reader or detokenizer key (onboarded); "
                                     "list: only this tenant's keys")
    sp.add_argument("--label", default="", help="create: a note naming the key's holder or use (no personal data)")
    sp.add_argument("--actor", help="who does it (default: the login name; kept in the audit trail)")


def _check_create(s: Settings, args: argparse.Namespace) -> tuple[Role, str | None]:
    """The new key's role and tenant (onboarded: this probes Redis), or a usage error."""
    from streams.api.api_keys import MAX_LABEL

    if args.key_id:
        raise UsageError("create takes no KEY_ID (the key's id is made for it)")
    if not args.role:
        raise UsageError(f"create needs --role: {', '.join(ROLE_CHOICES[:-1])} or {ROLE_CHOICES[-1]}")
    role = Role(args.role)
    tenant: str | None = None
    if role is Role.OPERATOR:
        if args.tenant:
            raise UsageError("operator keys belong to no tenant: leave out --tenant")
    else:
        if not args.tenant:
            raise UsageError(f"a {role.value} key belongs to one tenant: add --tenant NAME")
        tenant = onboarded_tenant(s, args.tenant, args)
    if len(args.label) > MAX_LABEL or any(ord(c) < 32 or ord(c) == 127 for c in args.label):
        raise UsageError(f"--label: at most {MAX_LABEL} printable characters")
    return role, tenant


def _check_revoke(args: argparse.Namespace) -> None:
    if not args.key_id:
        raise UsageError("revoke needs the KEY_ID (`streams apikeys list` shows them)")
    if args.role or args.tenant or args.label:
        raise UsageError("revoke takes only the KEY_ID")
    if not re.fullmatch(r"[0-9a-f]{12}", args.key_id):
        # Never echoed: it could be a whole token pasted by mistake.
        raise UsageError("KEY_ID is the key's id, 12 lowercase hex characters (`streams apikeys list` shows "
                         "them), not its token")


def cmd_apikeys(args: argparse.Namespace) -> int:
    from streams.api.api_keys import ApiKeyStore
    from streams.audit.keys import open_audit_log
    from streams.connections import Purpose, redis_client
    from streams.tenancy.api_key_admin import AuditedApiKeys, KeyNotAudited
    from streams.tenancy.names import validate_tenant_name

    s = settings()
    # Everything is checked before the audit trail is opened or anything is written.
    tenant: str | None = None
    if args.action == "create":
        role, tenant = _check_create(s, args)
    elif args.action == "revoke":
        _check_revoke(args)
    else:  # list
        if args.key_id or args.role or args.label:
            raise UsageError("list takes only --tenant")
        tenant = validate_tenant_name(args.tenant) if args.tenant else None

    ready(args, s)
    store = ApiKeyStore(redis_client(s, Purpose.ADMIN))
    if args.action == "revoke":
        meta = store.get(args.key_id)
        if meta is None:
            raise UsageError(f"no API key {args.key_id} (`streams apikeys list` shows them)")
    with open_audit_log(s, actor(args), writer()) as audit:
        keys = AuditedApiKeys(store, audit)
        try:
            if args.action == "create":
                created = keys.create(tenant, role, args.label)
                print("the token below is shown once; store it now (only its hash is kept)", file=sys.stderr)
                print(json.dumps(created, indent=2))
                return 0
            if args.action == "revoke":
                print(json.dumps(keys.revoke(meta), indent=2))
                return 0
        except KeyNotAudited as exc:
            raise deps.audit_unreachable(s, str(exc)) from None
        listed = keys.list(tenant)
    print(json.dumps(listed, indent=2))  # metadata only: ApiKeyStore.list never returns hashes
    return 0
