"""``streams principals``: the privacy officer's and the auditor's own credentials (secure broker).

The roles are ``streams.tenancy.principals.ROLES``; the work is its ``PrincipalService``.
"""

from __future__ import annotations

import argparse
import json

from streams.cli.base import A, K, R, Subparsers, actor, add_command, print_result, ready, settings, writer
from streams.cli.errors import UsageError
from streams.tenancy.principals import ROLES


def register(sub: Subparsers) -> None:
    sp = add_command(sub, "principals", "make the privacy officer's and the auditor's own credentials (secure broker)",
                     cmd_principals,
                     "Each staff role gets a Kafka SCRAM user (and, where it needs one, a Redis user) with only its "
                     "row's rights in the README's security model.\n\n"
                     "privacy-officer: write privacy.requests; read receipts, request indexes, counts and the tenant "
                     "registry in Redis. Run `streams privacy ...` with STREAMS_KAFKA_USERNAME=privacy-officer and "
                     "its Redis user in STREAMS_REDIS_URL.\n"
                     "auditor: read the audit topic and the writers' published public keys. Run `streams audit "
                     "verify` with it.\n\n"
                     "create ROLE: idempotent; prints a password only when it makes one. rotate ROLE: new passwords; "
                     "open Redis sessions end at once, Kafka sessions within STREAMS_KAFKA_REAUTH_MS. delete ROLE: "
                     "removes the users and their ACLs. list: which roles exist. Each action is audited.",
                     needs=(R, K, A))
    sp.add_argument("action", choices=["create", "list", "rotate", "delete"])
    sp.add_argument("role", nargs="?", choices=list(ROLES), help="the staff role")
    sp.add_argument("--actor", help="who does it (default: the login name; kept in the audit trail)")


def cmd_principals(args: argparse.Namespace) -> int:
    from streams.audit.keys import open_audit_log
    from streams.tenancy.principals import build_principals

    s = settings()
    if args.action != "list" and not args.role:
        raise UsageError(f"`principals {args.action}` needs a ROLE ({', '.join(ROLES)})")
    ready(args, s)
    who = actor(args)
    with open_audit_log(s, who, writer()) as audit:
        svc = build_principals(s, who, audit)
        if args.action == "list":
            print(json.dumps(svc.list(), indent=2))
            return 0
        if args.action == "create":
            result = svc.create(args.role)
        elif args.action == "rotate":
            result = svc.rotate(args.role)
        else:
            result = svc.delete(args.role)
    print_result(result, "salted verifiers or hashes")
    return 0
