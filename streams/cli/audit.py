"""``streams audit``: verify the signed, hash-chained audit trail; list, rotate or export its keys.

The work is in ``streams.audit.cli.audit_command``; this module parses the arguments.
"""

from __future__ import annotations

import argparse
import sys

from streams.cli.base import A, K, R, Subparsers, actor, add_command, ready, settings, writer


def register(sub: Subparsers) -> None:
    sp = add_command(sub, "audit", "verify the signed, hash-chained audit trail; list, rotate or export its keys",
                     cmd_audit,
                     "verify: read the whole audit topic, authenticate every record with its writer's published "
                     "public key and check every chain; names each chain's writer and the record where something is "
                     "wrong (forged, unknown-writer, modified, removed, reordered or foreign). Exit status 1 on a "
                     "break. Needs read access to the topic and the public keys (Redis, or --keyring FILE); no "
                     "secret.\n\n"
                     "keys list: every writer's keys (public), which is current. keys rotate [--writer W]: a new "
                     "signing key for W (default: this CLI user's); the old one stays published and verifies what it "
                     "signed; audited. keys export [--out FILE]: the keyring (public keys only) for auditors.",
                     needs=lambda a: (K, A) if a.action == "verify" and a.keyring else (K, A, R),
                     exit1="a chain is broken or cannot be authenticated, or the trail could not be read to its end")
    sp.add_argument("action", choices=["verify", "keys"])
    sp.add_argument("keys_action", nargs="?", choices=["list", "rotate", "export"], metavar="KEYS_ACTION",
                    help="for keys: list, rotate or export")
    sp.add_argument("--keyring", help="verify: a keyring file from `audit keys export` instead of Redis")
    sp.add_argument("--trail", help="verify: the trail name the records were signed for (default: the topic's)")
    sp.add_argument("--writer", help="keys rotate: whose key (e.g. worker:streams-pipeline)")
    sp.add_argument("--out", help="keys export: write the keyring to this file (default: standard output)")
    sp.add_argument("--actor", help="keys rotate: who does it (default: the login name; kept in the audit trail)")


def cmd_audit(args: argparse.Namespace) -> int:
    from streams.audit.cli import audit_command

    s = settings()
    ready(args, s)
    return audit_command(s, args.action, args.keys_action, keyring_file=args.keyring, trail=args.trail,
                         writer=args.writer, out_file=args.out, cli_writer=writer(),
                         actor=actor(args), out=sys.stdout)
