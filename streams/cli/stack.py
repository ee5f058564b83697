"""``streams stack``: the local Kafka and Redis of development and tests (``streams.devstack.stack``)."""

from __future__ import annotations

import argparse

from streams.cli.base import Subparsers, add_command, settings


def register(sub: Subparsers) -> None:
    sp = add_command(sub, "stack", "run the local Kafka (KRaft) and Redis without Docker", cmd_stack,
                     "Start, stop or inspect the local stack: Apache Kafka from Maven jars on Java 17 and Debian's "
                     "redis-server with AOF on. `up` also creates the topics. Data lives under STREAMS_STACK_DIR.",
                     exit1="`up` could not start a part (its log is named)")
    sp.add_argument("action", choices=["up", "down", "status", "wipe"],
                    help="up: start (idempotent); down: stop; status: show; wipe: stop and delete data")


def cmd_stack(args: argparse.Namespace) -> int:
    from streams.devstack.stack import LocalStack
    from streams.ops.topics import ensure_topics

    s = settings()
    stack = LocalStack(s)
    if args.action == "up":
        print(f"starting Redis ({s.redis_url}) and Kafka {s.kafka_version} ({s.kafka_bootstrap}) in {s.stack_dir} ...",
              flush=True)
        stack.up()
        for name, state in ensure_topics(s).items():
            print(f"  topic {name}: {state}")
        print("stack is up")
    elif args.action == "down":
        stack.down()
        print("stack stopped")
    elif args.action == "wipe":
        stack.wipe()
        print(f"stack stopped and its data under {s.stack_dir} deleted")
    else:
        for name, running in stack.status().items():
            print(f"{name}: {'running' if running else 'stopped'}")
    return 0
