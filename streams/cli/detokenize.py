"""``streams detokenize``: a token's original value for an authorized operator, audited before it is shown."""

from __future__ import annotations

import argparse

from streams.cli.base import A, K, R, Subparsers, actor, add_command, onboarded_tenant, settings, writer
from streams.cli.errors import UsageError


def register(sub: Subparsers) -> None:
    sp = add_command(sub, "detokenize", "reveal a token's value, for an authorized operator; audited", cmd_detokenize,
                     "Return the original value of a token of one subject. Every call, allowed or refused, is "
                     "written to the audit trail with who and why before anything is shown. A refusal (wrong "
                     "subject, erased subject, no reason) is status 2.",
                     needs=(R, K, A))
    sp.add_argument("tenant")
    sp.add_argument("subject", help="the subject id the token belongs to")
    sp.add_argument("token", help="a tok.<kind>.<data> value from a clean event")
    sp.add_argument("--reason", required=True, help="why the value is needed (kept in the audit trail; no PII)")
    sp.add_argument("--actor", help="who asks (default: the login name)")


def cmd_detokenize(args: argparse.Namespace) -> int:
    from streams.audit.keys import open_audit_log
    from streams.connections import Purpose, redis_client
    from streams.privacy.detokenize import Detokenizer, DetokenizeRefused
    from streams.privacy.keys import KeyStore, LocalKeyFileProvider
    from streams.privacy.pseudonyms import Pseudonymizer

    s = settings()
    tenant = onboarded_tenant(s, args.tenant, args)
    provider = LocalKeyFileProvider(s.master_key_file, create=False)
    client = redis_client(s, Purpose.CLI)
    who = actor(args)
    with open_audit_log(s, who, writer(), client=client, provider=provider) as audit:
        d = Detokenizer(KeyStore(client, provider), audit, Pseudonymizer(client, provider))
        try:
            value = d.detokenize(tenant, args.subject, args.token, who, args.reason)
        except DetokenizeRefused as exc:
            raise UsageError(str(exc)) from None
    print(value)
    return 0
