"""``streams privacy``: file a privacy request, show its receipt, or a tenant's compliance report.

Request types and purposes come from ``streams.consent.request_types`` and ``streams.consent.requests.PURPOSES``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from streams.cli import deps
from streams.cli.base import K, R, Subparsers, actor, add_command, onboarded_tenant, settings
from streams.cli.errors import UsageError
from streams.consent import request_types
from streams.consent.requests import PURPOSES, PrivacyRequest
from streams.settings import Settings


def register(sub: Subparsers) -> None:
    sp = add_command(sub, "privacy", "file privacy requests, show their receipts, report per tenant", cmd_privacy,
                     "file: publish a request on the privacy requests topic and print its id (--wait N: wait up "
                     "to N seconds for its receipt). Types: "
                     + "; ".join(f"{k.name} ({k.doc}{', needs --purpose' if k.needs_purpose else ''})"
                                 for k in request_types.kinds())
                     + ". status: a request's receipt with each step and its time (a request of a tenant whose "
                     "records are damaged is 'parked' until it is repaired). report: the tenant's compliance report.",
                     needs=lambda a: (R, K) if a.action == "file" else (R,),
                     exit1="file --wait: the receipt did not come in time; status: the request is pending or unknown")
    sp.add_argument("action", choices=["file", "status", "report"])
    sp.add_argument("tenant")
    sp.add_argument("--type", choices=list(request_types.names()))
    sp.add_argument("--subject", help="the subject id (the tenant's id of the person)")
    sp.add_argument("--purpose", help=f"for grant/revoke: {', '.join(PURPOSES)}")
    sp.add_argument("--reason", help="why (kept in the audit trail; no personal data)")
    sp.add_argument("--actor", help="who files it (default: the login name)")
    sp.add_argument("--request-id", help="for status")
    sp.add_argument("--wait", type=float, help="for file: seconds to wait for the receipt")


def cmd_privacy(args: argparse.Namespace) -> int:
    from streams.connections import Purpose, redis_client
    from streams.consent.store import ConsentStore

    s = settings()
    if args.action == "file" and (not args.subject or not args.type):
        raise UsageError("file needs --type and --subject")
    if args.action == "status" and not args.request_id:
        raise UsageError("status needs --request-id")
    tenant = onboarded_tenant(s, args.tenant, args)
    consent = ConsentStore(redis_client(s, Purpose.CLI))
    if args.action == "file":
        return _file(s, args, tenant, consent)
    if args.action == "status":
        receipt = consent.receipt(tenant, args.request_id)
        if receipt is None:
            print(json.dumps({"request_id": args.request_id, "status": "pending or unknown"}))
            return 1
        print(json.dumps(receipt, indent=2))
        return 0
    from streams.consent.report import compliance_report

    print(json.dumps(compliance_report(redis_client(s, Purpose.CLI), tenant), indent=2))
    return 0


def _file(s: Settings, args: argparse.Namespace, tenant: str, consent: Any) -> int:
    """Publish the request and print its id; with --wait, its receipt once done (status 1 if not in time)."""
    from streams.consent.exceptions import InvalidRequest
    from streams.consent.requests import new_request

    try:
        req = new_request(args.type, tenant, args.subject, actor(args), args.purpose, args.reason or "")
    except InvalidRequest as exc:
        raise UsageError(str(exc)) from None
    _publish(s, req)
    print(req.request_id)
    if not args.wait:
        return 0
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        receipt = consent.receipt(tenant, req.request_id)
        if receipt and receipt.get("status") == "done":
            print(json.dumps(receipt, indent=2))
            return 0
        time.sleep(0.1)
    print(f"not done after {args.wait:.0f}s; `streams privacy status {tenant} {req.request_id}` "
          "shows it when it is", file=sys.stderr)
    return 1


def _publish(s: Settings, req: PrivacyRequest) -> None:
    """Send one request to the requests topic and wait for the broker's acknowledgement (else status 3)."""
    from confluent_kafka import Producer

    from streams.connections import request_producer_config

    p = Producer(request_producer_config(s.kafka(), {"logger": deps._quiet}))
    errors: list[Any] = []
    p.produce(s.requests_topic, req.to_json(), req.key, on_delivery=lambda err, _m: errors.append(err))
    if p.flush(30) or errors[0] is not None:
        raise deps.kafka_unreachable(s, "the request was not acknowledged by the broker: "
                                        f"{errors[0] if errors else 'timeout'}")
