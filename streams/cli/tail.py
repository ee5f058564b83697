"""``streams tail``: a tenant's clean stream, decoded, one JSON line a record."""

from __future__ import annotations

import argparse
import json
from typing import Any

from streams.cli.base import Subparsers, settings
from streams.cli.consume import add_follow_args, add_follow_command, consume


def register(sub: Subparsers) -> None:
    sp = add_follow_command(sub, "tail", "show a tenant's clean stream, decoded", cmd_tail)
    sp.add_argument("tenant")
    add_follow_args(sp)


def cmd_tail(args: argparse.Namespace) -> int:
    from streams.consumer.clean_decoder import CleanDecoder
    from streams.tenancy.names import validate_tenant_name

    s = settings()
    tenant = validate_tenant_name(args.tenant)
    decoder = CleanDecoder.from_dir(s.schemas_dir / "clean")

    def show(msg: Any) -> None:
        # Flushed per record: a follower (`| grep`, `| head`) sees each one as it comes.
        if msg.value() is None:
            print(json.dumps({"key": (msg.key() or b"").decode(), "tombstone": True}), flush=True)
            return
        name, event = decoder.decode(msg.value())
        print(json.dumps({"key": (msg.key() or b"").decode(), "schema": name, "partition": msg.partition(),
                          "offset": msg.offset(), "event": event}, default=str), flush=True)

    return consume(s, s.tenant_topic(tenant), show, args)
