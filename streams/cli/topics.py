"""``streams topics``: create or list the topics the project declares (``streams.ops.topics``)."""

from __future__ import annotations

import argparse

from streams.cli.base import K, Subparsers, add_command, ready, settings


def register(sub: Subparsers) -> None:
    sp = add_command(sub, "topics", "create or list the project's topics", cmd_topics,
                     "Topics are declared by the project (the broker does not auto-create). `create` is idempotent; "
                     "`list` shows the declared topics and their settings (no broker needed).",
                     needs=lambda a: (K,) if a.action == "create" else ())
    sp.add_argument("action", choices=["create", "list"])


def cmd_topics(args: argparse.Namespace) -> int:
    from streams.ops.topics import all_topics, ensure_topics

    s = settings()
    if args.action == "create":
        ready(args, s)
        for name, state in ensure_topics(s).items():
            print(f"{name}: {state}")
    else:
        for spec in all_topics(s):
            cfg = " ".join(f"{k}={v}" for k, v in spec.config.items())
            print(f"{spec.name}  partitions={spec.partitions}  {cfg}\n    {spec.purpose}")
    return 0
