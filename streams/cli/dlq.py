"""``streams dlq`` (DLQ records with their reasons) and ``streams dlq-resolve`` (a pseudonym's subject, audited)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from streams.cli.base import A, K, R, Subparsers, actor, add_command, onboarded_tenant, ready, settings, writer
from streams.cli.consume import add_follow_args, add_follow_command, consume
from streams.cli.errors import UsageError
from streams.settings import Settings


def register(sub: Subparsers) -> None:
    sp = add_follow_command(sub, "dlq", "show DLQ entries with their reasons", cmd_dlq)
    sp.add_argument("--reason", help="only this reason code")
    sp.add_argument("--json", action="store_true", help="print whole DLQ records as JSON")
    sp.add_argument("--payload", metavar="FILE",
                    help="only records of this raw payload (matched by its keyed fingerprint)")
    sp.add_argument("--event-id", help="only records of this event id (matched by its keyed fingerprint)")
    sp.add_argument("--tenant", help="with --payload/--event-id: the tenant the event was for")
    add_follow_args(sp)

    sp = add_command(sub, "dlq-resolve", "show the subject id behind a DLQ record's pseudonym, for triage; audited",
                     cmd_dlq_resolve,
                     "DLQ records name subjects only by pseudonym. This prints the subject id behind one, after "
                     "writing who asked and why to the audit trail. Refused once the subject is erased (or no DLQ "
                     "record of it is retained any more).",
                     needs=(R, K, A))
    sp.add_argument("tenant")
    sp.add_argument("pseudonym", help="a p_<24 hex> value from a DLQ record's subject or key.subject")
    sp.add_argument("--reason", required=True, help="why the id is needed (kept in the audit trail; no PII)")
    sp.add_argument("--actor", help="who asks (default: the login name)")


def _wanted_fingerprints(s: Settings, args: argparse.Namespace) -> set[str] | None:
    """The fingerprints of the record the operator holds, under every live DLQ key version; None: no filter."""
    if not (args.payload or args.event_id):
        return None
    import redis

    from streams.dlq.keys import DlqKeyring
    from streams.privacy.keys import LocalKeyFileProvider

    ring = DlqKeyring(redis.Redis.from_url(s.redis_url, socket_timeout=5),
                      LocalKeyFileProvider(s.master_key_file, create=False), s.dlq_topic)
    scopes = [args.tenant, None] if args.tenant else [None]
    wanted: set[str] = set()
    for scope in scopes:
        if args.payload:
            wanted.update(ring.fingerprints("payload", scope, Path(args.payload).read_bytes()))
        if args.event_id:
            wanted.update(ring.fingerprints("event_id", scope, args.event_id.encode()))
    return wanted


def cmd_dlq(args: argparse.Namespace) -> int:
    s = settings()
    wanted = _wanted_fingerprints(s, args)

    def show(msg: Any) -> None:
        doc = json.loads(msg.value())
        if args.reason and doc.get("reason") != args.reason:
            return
        if wanted is not None and not wanted & {doc.get("payload_fingerprint"), doc.get("event_ref")}:
            return
        if args.json:
            print(json.dumps(doc), flush=True)
        else:
            src = doc.get("source", {})
            where = f"{src.get('topic')}[{src.get('partition')}]@{src.get('offset')}"
            extra = f" field={doc['field']}" if doc.get("field") else ""
            extra += f" subject={doc['subject']}" if doc.get("subject") else ""
            print(f"{doc['reason']:<17} {where:<22} tenant={doc.get('tenant') or '-'}{extra}  {doc.get('detail')}",
                  flush=True)

    return consume(s, s.dlq_topic, show, args)


def cmd_dlq_resolve(args: argparse.Namespace) -> int:
    import redis

    from streams.audit.keys import open_audit_log
    from streams.dlq.subjects import DlqSubjects, ResolveRefused, resolve_audited
    from streams.privacy.keys import LocalKeyFileProvider

    s = settings()
    ready(args, s)
    tenant = onboarded_tenant(s, args.tenant, args)
    subjects = DlqSubjects(redis.Redis.from_url(s.redis_url, socket_timeout=5),
                           LocalKeyFileProvider(s.master_key_file, create=False))
    who = actor(args)
    with open_audit_log(s, who, writer()) as audit:
        try:
            subject = resolve_audited(subjects, audit, tenant, args.pseudonym, who, args.reason)
        except ResolveRefused as exc:
            raise UsageError(str(exc)) from None
    print(subject)
    return 0
