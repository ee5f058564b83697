"""``streams tenants``: onboard, list, describe, rotate credentials of, or delete tenants.

The work is ``streams.tenancy.onboarding.TenantService``, the same service the
HTTP API's tenant routes run; regimes and key roles come from the tenancy package.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from streams.cli.base import A, K, R, Subparsers, actor, add_command, print_result, ready, settings, writer
from streams.cli.errors import UsageError
from streams.tenancy.api_key_admin import TENANT_KEY_ROLES
from streams.tenancy.registry import REGIMES

_ROLE_LIST = ", ".join(TENANT_KEY_ROLES)


def register(sub: Subparsers) -> None:
    sp = add_command(
        sub, "tenants", "onboard, list, describe, rotate credentials of, or delete tenants", cmd_tenants,
        "create NAME: topics, Kafka SCRAM user and prefixed ACLs (secure broker), a Redis ACL user limited "
        f"to the tenant's keyspace, API keys (--roles: {_ROLE_LIST}), consent regime and tenant key, with the "
        "credentials printed once. A re-run on an onboarded tenant repairs topics, ACLs and rules but makes and "
        "shows no credential (new keys: `apikeys create --tenant`, or rotate-credentials). list / describe NAME: "
        "what exists (never secrets). rotate-credentials NAME: new Kafka and Redis passwords and API keys; the "
        "old ones stop working. delete NAME --yes: shreds the tenant's keys, revokes its credentials, deletes "
        "its topics and store, rewrites the AOF, and prints a receipt with each step's time; without "
        "--yes it changes nothing (status 2).",
        needs=(R, K, A))
    sp.add_argument("action", choices=["create", "list", "describe", "rotate-credentials", "delete"])
    sp.add_argument("name", nargs="?", help="tenant name: lowercase letters, digits, '-', starting with a letter")
    sp.add_argument("--regime", choices=list(REGIMES), default=REGIMES[0],
                    help="create: consent regime (opt_in: nothing is processed before consent)")
    sp.add_argument("--roles", default=TENANT_KEY_ROLES[0],
                    help=f"create: API key roles, comma-separated: {_ROLE_LIST} (default {TENANT_KEY_ROLES[0]})")
    sp.add_argument("--quota", metavar="produce=B/S,fetch=B/S,request=PCT",
                    help="create (secure broker): Kafka client quotas of the tenant's principals, enforced by the "
                         "broker: produce = producer_byte_rate of producer-<t>, fetch = consumer_byte_rate of "
                         "tenant-<t>, request = request_percentage of both; any subset, X=none removes one, "
                         "`none` all. Default: no quota (a re-run without --quota leaves them as they are). "
                         "describe shows them as the broker holds them; delete removes them")
    sp.add_argument("--yes", action="store_true", help="delete: confirm")
    sp.add_argument("--actor", help="who does it (default: the login name; kept in the audit trail)")


def _quota(args: argparse.Namespace) -> Any:
    """The parsed --quota (a ``TenantQuota``), or None when not given."""
    quota = None
    if args.quota is not None:  # checked before anything is opened: a bad flag changes nothing
        from streams.tenancy.exceptions import OnboardingError
        from streams.tenancy.quotas import parse_quota

        if args.action != "create":
            raise UsageError("--quota goes with `tenants create`")
        try:
            quota = parse_quota(args.quota)
        except OnboardingError as exc:
            raise UsageError(str(exc)) from None
    return quota


def _roles(args: argparse.Namespace) -> list[str]:
    """The NAME checked, and the key roles asked for; a refused command changes nothing."""
    from streams.tenancy.names import validate_tenant_name

    if args.action == "list":
        if args.name:
            raise UsageError("list takes no NAME (`streams tenants describe NAME` shows one)")
    else:
        if not args.name:
            raise UsageError(f"`tenants {args.action}` needs a tenant NAME")
        validate_tenant_name(args.name)
    roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    if args.action == "create":
        bad = [r for r in roles if r not in TENANT_KEY_ROLES]
        if bad or not roles:
            raise UsageError(f"--roles: unknown role {bad[0]!r} ({_ROLE_LIST}); nothing was created"
                             if bad else f"--roles names no role ({_ROLE_LIST}); nothing was created")
    if args.action == "delete" and not args.yes:
        raise UsageError(f"not deleted: deleting erases every event, key and credential of {args.name}; "
                         "add --yes to confirm")
    return roles


def cmd_tenants(args: argparse.Namespace) -> int:
    from streams.audit.keys import open_audit_log
    from streams.tenancy.onboarding import build_service

    quota = _quota(args)
    s = settings()
    # Every check before the audit trail or any store is opened: a refused command changes nothing.
    roles = _roles(args)
    ready(args, s)
    who = actor(args)
    with open_audit_log(s, who, writer()) as audit:
        svc = build_service(s, who, lambda: audit)
        if args.action == "list":
            print(json.dumps(svc.list(), indent=2))
            return 0
        if args.action == "create":
            result = svc.create(args.name, args.regime, roles, quota)
        elif args.action == "describe":
            result = svc.describe(args.name)
        elif args.action == "rotate-credentials":
            result = svc.rotate_credentials(args.name)
        else:  # delete, confirmed above
            result = svc.delete(args.name)
    print_result(result, "hashes or salted verifiers")
    return 0
