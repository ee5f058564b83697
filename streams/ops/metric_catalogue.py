"""Every metric the worker exposes at ``/metrics``: name, type, help text and label names, here only.

Call sites pass one of these definitions to ``streams.ops.metrics.Metrics`` (``inc``, ``observe``,
``set``), which accepts no other name and exactly the declared labels: a metric cannot be invented
at a call site, so this list is the whole contract (README "Operating" lists the same names; a unit
test keeps the two, and the names' Prometheus form, in step).

Naming (prometheus.io/docs/practices/naming): the ``streams_`` prefix, ``_total`` on counters, base
units only and in the name (``_seconds``, ``_bytes``; ``_records`` for counts of Kafka records).

Labels and cardinality. No label ever holds a subject id, an event or request id, a key or any
field value: the metrics are read by operators, who see no personal data. ``tenant`` is bounded by
the onboarded-tenant registry (``streams.tenancy.registry``: an event whose tenant is not onboarded
is counted as ``NO_TENANT``, never under the name it claimed); ``reason`` by ``streams.dlq.reasons``
and ``streams.consent.state.DropReason``; ``sink`` by the retried steps' names; ``stage`` by
``BATCH_STAGES``; ``topic``/``partition`` by the worker's assignment; ``type`` by the request types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["counter", "gauge", "histogram"]

#: The ``tenant`` label of an event no onboarded tenant owns (not a valid tenant name, so it cannot
#: collide with one).
NO_TENANT = "_none"

#: The stages of a batch (``streams.ingest.batch.BatchPipeline.handle``), the ``stage`` label of
#: BATCH_STAGE_DURATION. The sinks' stages are named by the sink (``streams.sinks.registry``).
BATCH_STAGES = ("requests", "validate", "consent", "keys", "transform", "topic_check", "stats")

# Buckets: a batch takes milliseconds to seconds (more while a dependency is down and it is held
# back); an event's end-to-end latency includes the batch's linger (STREAMS_BATCH_WITHIN) and any
# consumer lag; an erasure's includes the AOF rewrite.
_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
_SIZES = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


@dataclass(frozen=True)
class MetricDef:
    name: str  # as exposed (counters with their ``_total``)
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None  # histograms only

    @property
    def base_name(self) -> str:
        """The name prometheus_client is given (it adds ``_total`` to a counter's samples itself)."""
        return self.name[: -len("_total")] if self.kind == "counter" else self.name


# -------------------------------------------------------------------- events (ingest)
EVENTS_PROCESSED = MetricDef(
    "streams_events_processed_total", "counter",
    "Raw events taken from the raw topics, by tenant (_none: no onboarded tenant)", ("tenant",))
EVENTS_DELIVERED = MetricDef(
    "streams_events_delivered_total", "counter",
    "Clean events delivered to the tenant topic and the store", ("tenant",))
EVENTS_DLQ = MetricDef(
    "streams_events_dlq_total", "counter",
    "Records sent to the DLQ, by tenant (_none: no onboarded tenant) and reason", ("tenant", "reason"))
EVENTS_CONSENT_DROPPED = MetricDef(
    "streams_events_consent_dropped_total", "counter",
    "Events dropped for want of consent (audited), by tenant and reason", ("tenant", "reason"))
TENANT_ISOLATED = MetricDef(
    "streams_tenant_isolated_total", "counter",
    "Events of a tenant set aside because of a fault of that tenant (alert on it)", ("tenant", "reason"))
BATCH_SIZE = MetricDef(
    "streams_batch_size_records", "histogram", "Raw records per batch", buckets=_SIZES)
BATCH_DURATION = MetricDef(
    "streams_batch_duration_seconds", "histogram",
    "Time a batch took from its start to every record in its sinks (including hold-back)", buckets=_FAST)
BATCH_STAGE_DURATION = MetricDef(
    "streams_batch_stage_duration_seconds", "histogram",
    "Time a batch spent in one stage (requests, validate, consent, keys, transform, topic_check, a sink's "
    "name, stats)", ("stage",), buckets=_FAST)
EVENT_E2E_LATENCY = MetricDef(
    "streams_event_e2e_latency_seconds", "histogram",
    "From a delivered event's raw record timestamp to its delivery (every sink written)", buckets=_LATENCY)
SINK_RETRIES = MetricDef(
    "streams_sink_retries_total", "counter", "Steps retried because a dependency failed", ("sink",))
STORE_REFUSED_ERASED = MetricDef(
    "streams_store_refused_erased_total", "counter",
    "Events the store refused because their subject was erased after the batch's gate")
INFLIGHT_LEASE_LAPSED = MetricDef(
    "streams_inflight_lease_lapsed_total", "counter",
    "Batches whose in-flight lease lapsed before their topic write (alert on it)")
ERASURE_LATE_TOMBSTONES = MetricDef(
    "streams_erasure_late_tombstones_total", "counter",
    "Tombstones a late batch wrote for its own events of subjects erased meanwhile")
RAW_PRUNES = MetricDef(
    "streams_raw_prunes_total", "counter", "Partitions of raw topics whose processed records were deleted")

# -------------------------------------------------------------------- the consumer
CONSUMER_LAG = MetricDef(
    "streams_consumer_lag_records", "gauge",
    "Records of an assigned partition not yet processed by this worker (end offset minus next offset to "
    "process)", ("topic", "partition"))
CONSUMER_STALLED = MetricDef(
    "streams_consumer_stalled_seconds", "gauge",
    "Seconds since an assigned partition last made progress while it had records to process (0 when it "
    "has none)", ("topic", "partition"))
PARTITIONS_ASSIGNED = MetricDef(
    "streams_partitions_assigned", "gauge", "Partitions of a topic assigned to this worker", ("topic",))

# -------------------------------------------------------------------- privacy requests
PRIVACY_REQUESTS = MetricDef(
    "streams_privacy_requests_total", "counter", "Privacy requests carried out", ("type",))
PRIVACY_REQUESTS_PENDING = MetricDef(
    "streams_privacy_requests_pending_records", "gauge",
    "Records of privacy.requests (all partitions) not yet applied by any worker")
PRIVACY_REQUEST_OLDEST_AGE = MetricDef(
    "streams_privacy_request_oldest_pending_seconds", "gauge",
    "How long the oldest unapplied privacy request has been seen waiting (a lower bound: measured from "
    "the first refresh that saw it)")
PRIVACY_REQUESTS_PARKED = MetricDef(
    "streams_privacy_requests_parked_total", "counter",
    "Privacy requests parked by a fault of their tenant (alert on it: the tenant's events are set aside)",
    ("tenant",))
PRIVACY_REQUESTS_UNPARKED = MetricDef(
    "streams_privacy_requests_unparked_total", "counter",
    "Parked privacy requests carried out once their tenant was repaired", ("tenant",))
ERASURE_DURATION = MetricDef(
    "streams_erasure_duration_seconds", "histogram",
    "From an erasure's filing to a milestone: effective (every copy erased, key destroyed) or done (files "
    "rewritten, receipt done)", ("milestone",), buckets=_LATENCY)
ERASURE_FENCE_WAITS = MetricDef(
    "streams_erasure_fence_waits_total", "counter",
    "Erasures that waited for in-flight batches of other workers before their tombstones")
ERASURE_FENCE_BATCHES = MetricDef(
    "streams_erasure_fence_batches_total", "counter", "In-flight batches erasures waited for")
ERASURE_FENCE_LAPSED = MetricDef(
    "streams_erasure_fence_lapsed_total", "counter",
    "In-flight batches whose lease lapsed while an erasure waited (alert on it)")

# -------------------------------------------------------------------- the build
BUILD_INFO = MetricDef(
    "streams_build_info", "gauge",
    "Always 1: the package version, the schemas loaded and the fingerprint of the privacy policy they "
    "declare", ("version", "schemas", "policy"))

CATALOGUE: tuple[MetricDef, ...] = tuple(v for v in globals().values() if isinstance(v, MetricDef))
BY_NAME: dict[str, MetricDef] = {m.name: m for m in CATALOGUE}


def tenant_label(tenant: str | None) -> str:
    """The ``tenant`` label of an outcome: its tenant (only ever an onboarded one), else NO_TENANT."""
    return tenant or NO_TENANT
