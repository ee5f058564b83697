"""Every Redis and Kafka client the package makes is built here, from the one ``Settings`` object.

Like quix-streams' ``ConnectionConfig``: the connection (where, and with which credentials) comes
from the settings, and each kind of client adds its own part (a consumer's group, a producer's
acknowledgements) on top. A component that is handed a client or a configuration never reads
``Settings.redis_url`` or builds a connection itself, so a new connection setting (TLS, say) is one
change here. ``tests/unit/test_connections.py`` fails on a ``Redis.from_url(`` anywhere else in
the package.

Redis. ``redis_client(settings, purpose)`` (blocking, redis-py) and ``async_redis_client`` (the
worker's store writer, ``redis.asyncio``). The purpose picks the timeouts (``REDIS_TIMEOUTS``,
each with why); ``decode_responses=True`` is for readers that want ``str`` (the store reader).
``redis_probe_client`` is for the "is Redis there" checks, whose timeout is the caller's.

Kafka (librdkafka, confluent-kafka). A component takes a ``KafkaTarget``: a bootstrap string
(plaintext: tests, the demo) or the connection mapping ``Settings.kafka()`` gives (SASL/SCRAM on
the secure broker; built in ``streams.settings`` because settings validate it, and the bottom layer
imports nothing higher). ``client_config`` is that mapping plus a client's own keys;
``producer_config``, ``consumer_config`` and ``admin_config`` add each kind's defaults (its logger,
the pipeline producer's ordering and acknowledgement settings) and ``admin_client(settings)`` is the
admin client of the CLI and the worker. ``faust_broker(settings)`` is the same connection for the
Faust app, ``aiokafka_connection(settings)`` for an aiokafka client (the broker quota calls).

Layer: imports only the bottom layer (``streams.settings``), so every package may use it; it must
not import anything higher, nor hold a pipeline rule (which topic, which key): it makes clients.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Mapping, Union

import redis

from streams.settings import SCRAM_MECHANISM, Settings

if TYPE_CHECKING:  # imported where used: the CLI imports this module, and most commands need neither
    import redis.asyncio as aioredis
    from confluent_kafka.admin import AdminClient

__all__ = [
    "Purpose", "RedisTimeouts", "REDIS_TIMEOUTS", "redis_client", "async_redis_client", "redis_probe_client",
    "KafkaTarget", "client_config", "producer_config", "request_producer_config", "consumer_config",
    "admin_config", "admin_client", "faust_broker", "aiokafka_connection",
]

# --------------------------------------------------------------------------- Redis


@dataclass(frozen=True)
class RedisTimeouts:
    """Seconds a Redis command may take (``socket_timeout``) and a connection may take to open."""

    command: float
    connect: float


class Purpose(Enum):
    """What a Redis client is for: it picks the client's timeouts (``REDIS_TIMEOUTS``)."""

    #: The worker and its HTTP API: batches, privacy requests, API calls.
    WORKER = "worker"
    #: A CLI command's reads and small writes (status, detokenize, the store, the DLQ).
    CLI = "cli"
    #: Tenant, principal, API key and audit key management (the CLI's and the operator API's).
    ADMIN = "admin"
    #: ``streams keys rotate``: re-wraps every subject key of a tenant.
    KEY_ROTATION = "key_rotation"


#: The timeouts of each purpose. A connection opens within 5 s or Redis is not there (every purpose).
REDIS_TIMEOUTS: dict[Purpose, RedisTimeouts] = {
    # A worker call touches a few keys (one script per tenant and batch): past 5 s Redis is in trouble,
    # and failing then is what lets the worker hold the batch back and retry (streams.ops.retry)
    # instead of hanging in one call.
    Purpose.WORKER: RedisTimeouts(command=5.0, connect=5.0),
    # Someone waits at a terminal for a few keys: the same 5 s, then the command says Redis is away.
    Purpose.CLI: RedisTimeouts(command=5.0, connect=5.0),
    # A tenant deletion unlinks the tenant's whole keyspace and ACL SAVE rewrites the ACL file:
    # on a large tenant longer than a worker call (a deletion cut short is run again; it is idempotent).
    Purpose.ADMIN: RedisTimeouts(command=10.0, connect=5.0),
    # A rotation re-wraps every subject key of the tenant, up to 500 in one script call (a SCAN
    # page): the longest calls the project makes (a rotation cut short is run again: it re-wraps what is left).
    Purpose.KEY_ROTATION: RedisTimeouts(command=30.0, connect=5.0),
}


def redis_client(settings: Settings, purpose: Purpose, *, decode_responses: bool = False) -> redis.Redis:
    """A blocking client of ``settings.redis_url`` with ``purpose``'s timeouts (no connection opened yet).
    ``decode_responses=True`` answers ``str`` instead of ``bytes``."""
    t = REDIS_TIMEOUTS[purpose]
    return redis.Redis.from_url(settings.redis_url, socket_timeout=t.command, socket_connect_timeout=t.connect,
                                decode_responses=decode_responses)


def async_redis_client(settings: Settings, purpose: Purpose = Purpose.WORKER) -> aioredis.Redis:
    """An asyncio client of ``settings.redis_url`` (the worker's store writer), ``bytes`` answers."""
    import redis.asyncio as aioredis

    t = REDIS_TIMEOUTS[purpose]
    return aioredis.Redis.from_url(settings.redis_url, socket_timeout=t.command, socket_connect_timeout=t.connect)


def redis_probe_client(settings: Settings, timeout: float) -> redis.Redis:
    """A blocking client for a reachability check (PING): connecting and answering within ``timeout``
    s each. Raises ``ValueError`` for a URL redis-py cannot parse."""
    return redis.Redis.from_url(settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)


# --------------------------------------------------------------------------- Kafka

#: A bootstrap string (plaintext) or a full librdkafka connection mapping (``Settings.kafka()``).
KafkaTarget = Union[str, Mapping[str, Any]]


def client_config(target: KafkaTarget, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """librdkafka configuration for ``target`` plus ``extra`` (``extra`` wins)."""
    conf: dict[str, Any] = {"bootstrap.servers": target} if isinstance(target, str) else dict(target)
    conf.update(extra or {})
    return conf


def producer_config(target: KafkaTarget, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The pipeline's producer (tenant topics, DLQ, audit): idempotent, so a subject's records stay
    in order across its own retries, and placed where Kafka's default partitioner puts a key."""
    return client_config(target, {
        "enable.idempotence": True,  # acks=all, ordered retries, no duplicates from our own retries
        "partitioner": "murmur2_random",  # Kafka's default, as Java and aiokafka consumers expect
        "linger.ms": 2,
        "compression.type": "lz4",
        "message.timeout.ms": 30000,
        "queue.buffering.max.messages": 200000,
        "logger": logging.getLogger("streams.kafka.producer"),
        **(extra or {}),
    })


def request_producer_config(target: KafkaTarget, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A producer of single records, each waited for (privacy requests filed by the CLI and the API):
    acknowledged by every in-sync replica and placed like Kafka's default partitioner places the key.
    Not idempotent: getting a producer id costs up to a second, and a request record sent twice is
    harmless (a request is applied once per request id)."""
    return client_config(target, {
        "acks": "all",
        "partitioner": "murmur2_random",
        "logger": logging.getLogger("streams.kafka.producer"),
        **(extra or {}),
    })


def consumer_config(target: KafkaTarget, group_id: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A consumer of group ``group_id`` that commits only when told (never automatically)."""
    return client_config(target, {
        "group.id": group_id,
        "enable.auto.commit": False,
        "logger": logging.getLogger("streams.kafka.consumer"),
        **(extra or {}),
    })


def admin_config(target: KafkaTarget, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An admin client (topics, offsets, ACLs, SCRAM users)."""
    return client_config(target, {"logger": logging.getLogger("streams.kafka.admin"), **(extra or {})})


def admin_client(settings: Settings) -> AdminClient:
    """The admin client of the CLI, the worker (raw pruning) and tenant management."""
    from confluent_kafka.admin import AdminClient

    return AdminClient(admin_config(settings.kafka()))


def faust_broker(settings: Settings) -> dict[str, Any]:
    """The broker connection as ``faust.App`` keyword arguments (``broker``, ``broker_credentials``):
    the worker's consumer of the raw topic, on the same user and mechanism as ``Settings.kafka()``."""
    import faust

    credentials = (faust.SASLCredentials(username=settings.kafka_username, password=settings.kafka_password,
                                         mechanism=SCRAM_MECHANISM) if settings.kafka_secure else None)
    return {"broker": [f"kafka://{h.strip()}" for h in settings.kafka_bootstrap.split(",")],
            "broker_credentials": credentials}


def aiokafka_connection(settings: Settings) -> dict[str, Any]:
    """The broker connection as aiokafka's keyword arguments (the same user and mechanism as
    ``Settings.kafka()``), for the few calls librdkafka lacks (client quotas)."""
    kw: dict[str, Any] = {"bootstrap_servers": settings.kafka_bootstrap.split(",")}
    if settings.kafka_secure:
        kw.update(security_protocol="SASL_PLAINTEXT", sasl_mechanism=SCRAM_MECHANISM,
                  sasl_plain_username=settings.kafka_username, sasl_plain_password=settings.kafka_password)
    return kw
