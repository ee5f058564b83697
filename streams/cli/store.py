"""``streams store``: a tenant's clean events in the Redis store, by subject, type and time, or id."""

from __future__ import annotations

import argparse
import json

from streams.cli.base import R, Subparsers, add_command, ready, settings
from streams.cli.errors import UsageError


def register(sub: Subparsers) -> None:
    sp = add_command(sub, "store", "query the Redis store of a tenant", cmd_store,
                     "Query a tenant's clean events in the store: by subject, by type and time range, or by id; "
                     "one JSON document a line (--count: a number). An unknown --event-id is status 2.",
                     needs=(R,))
    sp.add_argument("tenant")
    sp.add_argument("--subject", help="events of this subject, oldest first")
    sp.add_argument("--type", help="events of this type (e.g. order_placed)")
    sp.add_argument("--since", type=int, help="event time from, epoch ms")
    sp.add_argument("--until", type=int, help="event time to, epoch ms")
    sp.add_argument("--event-id", help="one event by id")
    sp.add_argument("--count", action="store_true", help="print the number of events (of --type if given)")
    sp.add_argument("--limit", type=int, default=20)
    sp.add_argument("--offset", type=int, default=0)


def cmd_store(args: argparse.Namespace) -> int:
    from streams.sinks.store import StoreReader
    from streams.tenancy.names import validate_tenant_name

    s = settings()
    tenant = validate_tenant_name(args.tenant)
    ready(args, s)
    reader = StoreReader.from_settings(s)
    if args.event_id:
        doc = reader.get(tenant, args.event_id)
        if doc is None:
            raise UsageError(f"no event {args.event_id} for tenant {tenant}")
        print(json.dumps(doc, indent=2))
        return 0
    if args.count:
        print(reader.count(tenant, args.type))
        return 0
    if args.subject:
        docs = reader.by_subject(tenant, args.subject, limit=args.limit, offset=args.offset)
    elif args.type:
        docs = reader.by_type(tenant, args.type, args.since, args.until, limit=args.limit, offset=args.offset)
    else:
        docs = reader.by_time(tenant, args.since, args.until, limit=args.limit, offset=args.offset)
    for d in docs:
        print(json.dumps(d))
    return 0
