"""The topics the project owns, with their configurations, and their creation.

The broker runs with ``auto.create.topics.enable=false``: a topic that is not
declared here does not exist, so a typo in a producer fails loudly instead of
creating a stray topic.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streams.connections import admin_client
from streams.ops.exceptions import TopicError
from streams.settings import Settings

log = logging.getLogger(__name__)

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    purpose: str = ""


def raw_topic_config(settings: Settings) -> dict[str, str]:
    """Raw events hold PII in the clear. The workers delete what they have processed
    (streams.ingest.raw_pruning); retention is only the backstop for a stopped pipeline.
    Short segments, because the broker removes only whole segments that are not active."""
    return {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS),
            "segment.ms": str(settings.segment_ms), "file.delete.delay.ms": str(settings.file_delete_delay_ms),
            "max.message.bytes": str(max(settings.max_event_bytes * 4, 1048588))}


def pipeline_topics(settings: Settings) -> list[TopicSpec]:
    """Topics shared by all tenants."""
    return [
        TopicSpec(settings.raw_topic, settings.partitions, raw_topic_config(settings),
                  "raw events from pipeline producers (trusted to name the tenant), keyed tenant/subject"),
        TopicSpec(
            settings.requests_topic, settings.partitions,
            # Same partition count as events.raw: Faust co-partitions the two, so a subject's
            # requests and events are handled by the same worker. The consent state they build
            # lives in Redis; the topic is the log of who asked what (90 days).
            {"cleanup.policy": "delete", "retention.ms": str(90 * DAY_MS)},
            "privacy requests (consent, opt-out, erasure), keyed tenant/subject",
        ),
        TopicSpec(
            settings.dlq_topic, 1,
            # Long enough for an operator to triage; records carry no raw PII.
            {"cleanup.policy": "delete", "retention.ms": str(30 * DAY_MS)},
            "rejected events with a reason code, no raw payload",
        ),
        TopicSpec(
            settings.quarantine_topic, 1,
            # Sealed (streams.dlq.quarantine): under the subject's key, shredded by an erasure, or a
            # daily key destroyed after this retention. Short segments: expired data leaves the disk.
            {"cleanup.policy": "delete", "retention.ms": str(settings.quarantine_retention_ms),
             "segment.ms": str(min(settings.segment_ms, settings.quarantine_retention_ms)),
             "file.delete.delay.ms": str(settings.file_delete_delay_ms),
             "max.message.bytes": str(max(settings.max_event_bytes * 4 + 4096, 1048588))},
            "sealed originals of rejected events a fix could rescue, for streams dlq redrive",
        ),
    ]


def audit_topic_spec(name: str) -> TopicSpec:
    """The audit topic (``streams.audit.log``): one partition (one total order), never deleted by
    time or size, never compacted."""
    return TopicSpec(
        name, 1,
        # Kept forever: it holds pseudonyms and non-personal details only, and an
        # audit trail that expires cannot prove what was done. Never compacted:
        # compaction would drop records and break the chains.
        {"cleanup.policy": "delete", "retention.ms": "-1"},
        "append-only hash-chained audit trail of privacy actions and detokenizations (no PII)",
    )


def audit_topics(settings: Settings) -> list[TopicSpec]:
    return [audit_topic_spec(settings.audit_topic)]


def tenant_topic_config(settings: Settings) -> dict[str, str]:
    """Compacted, so an erasure's tombstones remove the subject's records from the disk; each
    record has its own key (``<subject>/<event id>``), so compaction never merges two events.
    ``delete`` as well: clean events also age out after the tenant's retention."""
    return {
        "cleanup.policy": "compact,delete",
        "retention.ms": str(settings.tenant_retention_ms),
        "segment.ms": str(settings.segment_ms),
        "max.compaction.lag.ms": str(settings.max_compaction_lag_ms),
        "min.cleanable.dirty.ratio": str(settings.min_cleanable_dirty_ratio),
        "delete.retention.ms": str(settings.tombstone_retention_ms),
        "file.delete.delay.ms": str(settings.file_delete_delay_ms),
    }


def tenant_topics(settings: Settings, tenant: str) -> list[TopicSpec]:
    return [
        TopicSpec(
            settings.tenant_topic(tenant), settings.tenant_partitions, tenant_topic_config(settings),
            f"clean events of tenant {tenant}, Avro single-object, keyed <subject>/<event id>, "
            "partitioned by subject",
        ),
        TopicSpec(
            settings.tenant_raw_topic(tenant), settings.partitions, raw_topic_config(settings),
            f"raw events of tenant {tenant} from its producer principal only, keyed tenant/subject",
        ),
    ]


def all_topics(settings: Settings) -> list[TopicSpec]:
    specs = pipeline_topics(settings) + audit_topics(settings)
    for tenant in sorted(settings.tenants):
        specs.extend(tenant_topics(settings, tenant))
    return specs


def ensure_topics(settings: Settings, specs: list[TopicSpec] | None = None,
                  timeout: float = 30.0) -> dict[str, str]:
    """Create missing topics; return {name: "created" | "exists"}. Idempotent.

    Raises TopicError if a creation fails, or an existing topic has fewer
    partitions than declared (keys would be routed differently than expected).
    """
    specs = all_topics(settings) if specs is None else specs
    admin = admin_client(settings)
    try:
        existing = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise TopicError(f"cannot reach the broker at {settings.kafka_bootstrap}: {exc}") from None
    result: dict[str, str] = {}
    to_create = []
    for spec in specs:
        if spec.name in existing:
            have = len(existing[spec.name].partitions)
            if have < spec.partitions:
                raise TopicError(f"topic {spec.name} has {have} partitions, {spec.partitions} declared")
            result[spec.name] = "exists"
        else:
            to_create.append(NewTopic(spec.name, num_partitions=spec.partitions,
                                      replication_factor=settings.replication, config=spec.config))
    if to_create:
        futures = admin.create_topics(to_create, operation_timeout=timeout, request_timeout=timeout)
        for name, fut in futures.items():
            try:
                fut.result()
                result[name] = "created"
            except KafkaException as exc:
                err = exc.args[0]
                if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    result[name] = "exists"
                else:
                    raise TopicError(f"creating topic {name} failed: {err}") from None
        _wait_for_leaders(admin, [t.topic for t in to_create], timeout)
    return result


def _wait_for_leaders(admin: AdminClient, names: list[str], timeout: float) -> None:
    """A created topic is usable once every partition has a leader; clients fail before that."""
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending and time.monotonic() < deadline:
        md = admin.list_topics(timeout=timeout).topics
        for name in list(pending):
            t = md.get(name)
            if t is not None and t.error is None and t.partitions and all(
                p.leader >= 0 and p.error is None for p in t.partitions.values()
            ):
                pending.discard(name)
        if pending:
            time.sleep(0.2)
    if pending:
        raise TopicError(f"topics without a leader after {timeout:.0f}s: {', '.join(sorted(pending))}")
