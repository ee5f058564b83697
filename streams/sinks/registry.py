"""The configured sinks, in write order: what the worker writes, an erasure erases and a tenant
deletion drops (``streams.sinks.base`` says why the order matters).

Adding a sink is one line in ``SINKS`` (a factory taking ``SinkDeps``) plus its module. Tests add
one through ``SINKS`` too (monkeypatched), which reaches the worker, the privacy agent and tenant
deletion alike, because all three build their list here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import redis
from confluent_kafka.admin import AdminClient

from streams.settings import Settings
from streams.sinks.base import Sink, check_sinks
from streams.sinks.kafka_sink import KafkaSink
from streams.sinks.store import StoreSink, StoreWriter
from streams.sinks.tenant_topic import TenantTopicSink


@dataclass(frozen=True)
class SinkDeps:
    """What a sink may be built from. The worker gives a producer and a store writer; tenant
    deletion (CLI, operator API) gives an admin client instead. A sink keeps what it needs."""

    settings: Settings
    #: blocking Redis client: erasures and tenant deletion
    client: redis.Redis | None = None
    #: the worker's store writer (async, checks consent through the pseudonyms)
    store_writer: StoreWriter | None = None
    #: the worker's producer (tenant topics and DLQ)
    producer: KafkaSink | None = None
    #: an admin client (tenant deletion deletes topics)
    admin: AdminClient | None = None


SinkFactory = Callable[[SinkDeps], Sink]

#: Write order. The store first: it is the subject index every later sink's erasure relies on.
SINKS: list[SinkFactory] = [
    lambda d: StoreSink(d.store_writer, d.client),
    lambda d: TenantTopicSink(d.settings, d.producer, d.admin),
]


def build_sinks(deps: SinkDeps) -> list[Sink]:
    sinks = [factory(deps) for factory in SINKS]
    check_sinks(sinks)
    return sinks
