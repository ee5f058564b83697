"""Reading a topic from the command line, for ``tail`` and ``dlq``: the shared flags and the poll loop."""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable

from streams.cli import deps
from streams.cli.base import K, Subparsers, add_command, ready
from streams.cli.errors import UsageError
from streams.settings import Settings


def add_follow_command(sub: Subparsers, name: str, help: str,
                       fn: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    """A command that shows a topic's records until --max or --timeout; its own arguments go before the shared ones."""
    return add_command(sub, name, help, fn,
                       help[0].upper() + help[1:] + ", one line each, until --max records or --timeout "
                       "seconds (or Ctrl-C).", needs=(K,))


def add_follow_args(sp: argparse.ArgumentParser) -> None:
    """--from-beginning, --max and --timeout, last in the command's --help."""
    sp.add_argument("--from-beginning", action="store_true", help="start at the oldest retained record")
    sp.add_argument("--max", type=int, help="stop after this many records")
    sp.add_argument("--timeout", type=float, help="stop after this many seconds")


def consume(s: Settings, topic: str, on_record: Callable[[Any], None], args: argparse.Namespace) -> int:
    """Call ``on_record`` for each record of ``topic`` under a throwaway group; Ctrl-C ends it quietly (status 0)."""
    import uuid

    from confluent_kafka import Consumer, KafkaError

    from streams.connections import consumer_config

    ready(args, s)
    consumer = Consumer(consumer_config(s.kafka(), f"streams-cli-{uuid.uuid4().hex[:8]}", {
        "auto.offset.reset": "earliest" if args.from_beginning else "latest",
        "logger": deps._quiet,
    }))
    consumer.subscribe([topic])
    seen = 0
    deadline = time.monotonic() + args.timeout if args.timeout else None
    try:
        while args.max is None or seen < args.max:
            if deadline and time.monotonic() > deadline:
                break
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise UsageError(f"topic {topic} does not exist")
                continue
            on_record(msg)
            seen += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0
