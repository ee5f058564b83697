"""``streams keys``: show or rotate a tenant's key (the audited rotation: ``streams.privacy.key_rotation``)."""

from __future__ import annotations

import argparse

from streams.cli import deps
from streams.cli.base import A, K, R, Subparsers, actor, add_command, onboarded_tenant, settings, writer
from streams.cli.text import plural


def register(sub: Subparsers) -> None:
    sp = add_command(sub, "keys", "show or rotate a tenant's key", cmd_keys,
                     "show: the tenant key's current version. rotate: a new tenant key wraps every subject key; "
                     "tokens made before stay reversible. Each rotation is written to the audit trail (action "
                     "key.rotate, with the old and new versions); when the trail cannot be written nothing is "
                     "rotated.",
                     needs=lambda a: (R, K, A) if a.action == "rotate" else (R,))
    sp.add_argument("action", choices=["show", "rotate"])
    sp.add_argument("tenant")
    sp.add_argument("--actor", help="rotate: who does it (default: the login name; kept in the audit trail)")


def cmd_keys(args: argparse.Namespace) -> int:
    from streams.audit.keys import open_audit_log
    from streams.connections import Purpose, redis_client
    from streams.privacy.key_rotation import RotationNotAudited, rotate_tenant_key_audited
    from streams.privacy.keys import KeyStore, LocalKeyFileProvider

    s = settings()
    tenant = onboarded_tenant(s, args.tenant, args)
    store = KeyStore(redis_client(s, Purpose.KEY_ROTATION),
                     LocalKeyFileProvider(s.master_key_file, create=False))
    if args.action == "show":
        print(f"tenant {tenant}: key version {store.tenant_key_version(tenant)}")
        return 0
    # The audit trail is opened first: when it cannot be written, no key is rotated.
    with open_audit_log(s, actor(args), writer()) as audit:
        try:
            report = rotate_tenant_key_audited(store, audit, tenant)
        except RotationNotAudited as exc:
            raise deps.audit_unreachable(s, str(exc)) from None
    print(f"tenant {tenant}: key version {report.old_version} -> {report.new_version}, "
          f"{plural(report.rewrapped, 'subject key')} re-wrapped; earlier tokens stay reversible")
    return 0
