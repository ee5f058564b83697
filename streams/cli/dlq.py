"""``streams dlq`` (DLQ records with their reasons), ``streams dlq-resolve`` (a pseudonym's subject, audited)
and ``streams dlq-redrive`` (quarantined originals back through the pipeline, audited)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from streams.cli.base import A, K, R, Subparsers, actor, add_command, onboarded_tenant, ready, settings, writer
from streams.cli.consume import add_follow_args, add_follow_command, consume
from streams.cli.errors import UsageError
from streams.dlq.quarantine import REASONS as QUARANTINE_REASONS
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


    sp = add_command(sub, "dlq-redrive", "send quarantined originals of rejected events back through the pipeline; "
                     "audited", cmd_dlq_redrive,
                     "Events rejected for a reason a fix can rescue are kept, sealed, on the quarantine topic "
                     "(STREAMS_QUARANTINE_TOPIC, STREAMS_QUARANTINE_RETENTION_MS). After the fix (a schema deployed, "
                     "a tenant onboarded, a key restored), this sends the matching ones back to the raw topic. "
                     "Never redriven (counted as skipped): an erased subject's event, an event already in the store "
                     "or sent by another redrive in the last 15 minutes (idempotent by event id), an event whose "
                     "tenant is still unknown, a copy whose key expired. Prints progress on stderr and a JSON "
                     "summary; --wait N also reports how many were delivered and rejected again (by reason).",
                     needs=(R, K, A))
    sp.add_argument("--reason", required=True, choices=sorted(r.value for r in QUARANTINE_REASONS),
                    help="redrive the events rejected for this reason")
    sp.add_argument("--tenant", help="only this tenant's (or, for unknown_tenant, the tenant their key names)")
    sp.add_argument("--since", help="only events quarantined at or after this time (ISO 8601 or epoch ms)")
    sp.add_argument("--until", help="only events quarantined before this time (ISO 8601 or epoch ms)")
    sp.add_argument("--dry-run", action="store_true", help="open and check everything, send nothing")
    sp.add_argument("--rate", type=float, default=200.0, help="at most this many records per second (default 200)")
    sp.add_argument("--wait", type=float, default=0.0,
                    help="seconds to wait for the redriven events to be delivered or rejected again (default 0)")
    sp.add_argument("--actor", help="who redrives (default: the login name)")


def _time_ms(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    from datetime import datetime, timezone

    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{option} must be ISO 8601 (2026-12-02T10:00:00Z) or epoch milliseconds") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return int(at.timestamp() * 1000)


def _wanted_fingerprints(s: Settings, args: argparse.Namespace) -> set[str] | None:
    """The fingerprints of the record the operator holds, under every live DLQ key version; None: no filter."""
    if not (args.payload or args.event_id):
        return None
    from streams.connections import Purpose, redis_client
    from streams.dlq.keys import DlqKeyring
    from streams.privacy.keys import LocalKeyFileProvider

    ring = DlqKeyring(redis_client(s, Purpose.CLI),
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
    from streams.audit.keys import open_audit_log
    from streams.connections import Purpose, redis_client
    from streams.dlq.subjects import DlqSubjects, ResolveRefused, resolve_audited
    from streams.privacy.keys import LocalKeyFileProvider

    s = settings()
    ready(args, s)
    tenant = onboarded_tenant(s, args.tenant, args)
    subjects = DlqSubjects(redis_client(s, Purpose.CLI),
                           LocalKeyFileProvider(s.master_key_file, create=False))
    who = actor(args)
    with open_audit_log(s, who, writer()) as audit:
        try:
            subject = resolve_audited(subjects, audit, tenant, args.pseudonym, who, args.reason)
        except ResolveRefused as exc:
            raise UsageError(str(exc)) from None
    print(subject)
    return 0


def cmd_dlq_redrive(args: argparse.Namespace) -> int:
    import sys

    from streams.audit.keys import open_audit_log
    from streams.connections import Purpose, redis_client
    from streams.consent.store import ConsentStore
    from streams.dlq.quarantine import Quarantine, quarantine_keyring, subject_keys_of
    from streams.dlq.redrive import Redrive, RedriveFilter
    from streams.dlq.subjects import DlqSubjects
    from streams.privacy.keys import KeyStore, LocalKeyFileProvider
    from streams.privacy.pseudonyms import Pseudonymizer
    from streams.sinks.store import StoreReader
    from streams.tenancy.registry import TenantDirectory

    s = settings()
    flt = RedriveFilter(args.reason, args.tenant, _time_ms(args.since, "--since"), _time_ms(args.until, "--until"))
    if args.rate is not None and args.rate <= 0:
        raise UsageError("--rate must be positive")
    ready(args, s)
    client = redis_client(s, Purpose.ADMIN)  # a redrive reads and checks the whole quarantine topic
    provider = LocalKeyFileProvider(s.master_key_file, create=False)
    tenants = TenantDirectory(s.tenants, dict(s.tenant_regimes), client)
    tenants.refresh(force=True)
    pseudonyms = Pseudonymizer(client, provider)
    quarantine = Quarantine(s.quarantine_topic, quarantine_keyring(client, provider, s.quarantine_topic,
                                                                   s.quarantine_retention_ms),
                            subject_keys_of(KeyStore(client, provider)), pseudonyms, tenants)
    store = StoreReader.from_settings(s)
    redrive = Redrive(s, quarantine, client, ConsentStore(client), pseudonyms,
                      DlqSubjects(client, provider).resolve, tenants,
                      lambda t, e: store.get(t, e) is not None)
    who = actor(args)
    details = {"reason": flt.reason, "tenant": flt.tenant or "", "since_ms": flt.since_ms, "until_ms": flt.until_ms,
               "dry_run": args.dry_run}

    def progress(p: Any) -> None:
        print(f"redrive: {p.read} read, {p.matched} matching, {p.redriven} "
              f"{'to redrive' if p.dry_run else 'redriven'}, {sum(p.skipped.values())} skipped", file=sys.stderr,
              flush=True)

    with open_audit_log(s, who, writer()) as audit:
        # Audited before anything is sent: no audit record, no redrive.
        audit.append("dlq.redrive_started", flt.tenant, None, f"redrive of {flt.reason}", details)
        dlq_from = redrive.dlq_ends() if args.wait > 0 and not args.dry_run else {}
        summary = redrive.run(flt, dry_run=args.dry_run, rate=args.rate, progress=progress)
        progress(summary)
        result = summary.as_dict()
        if args.wait > 0 and not args.dry_run:
            result["outcome"] = redrive.outcomes(summary, dlq_from, args.wait)
        audit.append("dlq.redrive", flt.tenant, None, f"redrive of {flt.reason}",
                     {**details, "read": summary.read, "matched": summary.matched, "redriven": summary.redriven,
                      **{f"skipped_{k}": v for k, v in summary.skipped.items()}})
    print(json.dumps(result))
    return 0
