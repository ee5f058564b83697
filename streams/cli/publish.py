"""``streams publish``: events from a file onto the raw topic, all checked before any is sent."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from streams.cli.base import K, Subparsers, add_command, ready, settings
from streams.cli.errors import UsageError
from streams.cli.text import plural


def register(sub: Subparsers) -> None:
    sp = add_command(sub, "publish", "publish events from a file to events.raw", cmd_publish,
                     "Publish events from FILE: JSON Lines or a JSON array of objects, each naming its schema in a "
                     "'schema' member (e.g. \"customer_signup\"), or an Avro container file (.avro). Every event is "
                     "checked before anything is sent: one bad event publishes nothing.",
                     needs=(K,), exit1="some events were not acknowledged by the broker (the count is printed)")
    sp.add_argument("file", help="path, or - for standard input")
    sp.add_argument("--format", choices=["avro", "json"], default="avro",
                    help="wire format on events.raw (default avro: single-object encoding)")


def _read_events(path: str) -> list[dict[str, Any]]:
    """JSON Lines, a JSON array, or an Avro container file (.avro)."""
    if path.endswith(".avro"):
        import fastavro

        with open(path, "rb") as f:
            reader = fastavro.reader(f)
            name = reader.writer_schema["name"]
            return [{"schema": name, **rec} for rec in reader]
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    stripped = text.lstrip()
    if stripped.startswith("["):
        data = json.loads(text)
        if not all(isinstance(e, dict) for e in data):
            raise UsageError(f"{path}: the JSON array must hold objects")
        return data
    events = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise UsageError(f"{path}:{n}: not JSON ({exc.msg})") from None
    return events


def cmd_publish(args: argparse.Namespace) -> int:
    from streams.ingest.producer import EventProducer, encode_event, event_key
    from streams.schema.exceptions import SchemaError
    from streams.schema.registry import SchemaRegistry

    s = settings()
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    try:
        events = _read_events(args.file)
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read {args.file}: {exc}") from None
    # Encode everything first: a bad event in the file publishes nothing (a bad request changes nothing).
    encoded = []
    for i, e in enumerate(events, 1):
        try:
            encoded.append((event_key(e), encode_event(registry, e, args.format)))
        except SchemaError as exc:
            raise UsageError(f"event {i}: {exc}; nothing was published") from None
    ready(args, s)
    producer = EventProducer(s.kafka(), s.raw_topic, registry)
    for key, value in encoded:
        producer.send_raw(key, value)
    producer.flush()
    print(f"published {plural(producer.acked, 'event')} to {s.raw_topic} as {args.format}"
          + (f", {producer.failed} failed" if producer.failed else ""))
    return 1 if producer.failed else 0
