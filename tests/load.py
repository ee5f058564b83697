"""A bounded, steady load of events for several tenants on a background thread (e2e tests)."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Iterator

from streams.ingest import samples
from streams.ingest.producer import EventProducer
from streams.schema.registry import SchemaRegistry


@contextlib.contextmanager
def steady_load(s, tenants, subjects: int = 7, interval: float = 0.02, rounds: int = 2000
                ) -> Iterator[dict[str, list[str]]]:
    """Publish one order event per tenant every ``interval`` s (at most ``rounds`` rounds) to the
    shared raw topic while the block runs; yields {tenant: event ids sent}. On exit the thread is
    stopped, joined and its producer flushed; an error on the thread fails the block."""
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    sent: dict[str, list[str]] = {t: [] for t in tenants}
    stop = threading.Event()
    errors: list[BaseException] = []

    def load() -> None:
        try:
            p = EventProducer(s.kafka_bootstrap, s.raw_topic, registry)
            i = 0
            while not stop.is_set() and i < rounds:
                for t in sent:
                    e = samples.order(t, f"s-{i % subjects}")
                    p.send(e)
                    sent[t].append(e["event_id"])
                i += 1
                time.sleep(interval)
            p.flush()
        except BaseException as exc:  # re-raised by the block
            errors.append(exc)

    th = threading.Thread(target=load, daemon=True)
    th.start()
    try:
        yield sent
    finally:
        stop.set()
        th.join(60)
    assert not th.is_alive(), "the load thread did not stop"
    if errors:
        raise errors[0]
