"""The worker's I/O components, built once from Settings at start (blocking: run it off the event loop).

Kept apart from ``app.py`` so the Faust wiring stays short and the CLI can
build the same components (a privacy request handler, say) without Faust.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from streams.audit.keys import open_audit_log
from streams.audit.log import AuditLog
from streams.connections import Purpose, admin_client, async_redis_client, redis_client
from streams.erasure.reader import PrivacyRequestReader
from streams.consent.gate import ConsentGate
from streams.erasure.executor import PrivacyRequestExecutor
from streams.consent.store import ConsentStore
from streams.dlq.keys import DlqKeyring
from streams.dlq.quarantine import Quarantine, quarantine_keyring, subject_keys_of
from streams.dlq.record import DlqSealer
from streams.dlq.subjects import DlqSubjects
from streams.ingest.batch import BatchPipeline
from streams.ingest.processor import EventProcessor
from streams.ingest.raw_pruning import RawPruner
from streams.ops.metrics import Metrics
from streams.privacy.keys import KeyStore, LocalKeyFileProvider
from streams.privacy.pseudonyms import Pseudonymizer
from streams.erasure.parking import ParkedRequests
from streams.schema.registry import SchemaRegistry
from streams.settings import Settings
from streams.sinks.base import Sink
from streams.sinks.kafka_sink import KafkaSink
from streams.sinks.registry import SinkDeps, build_sinks
from streams.sinks.store import StoreWriter
from streams.tenancy.registry import TenantDirectory

log = logging.getLogger(__name__)


def purposes_of(registry: SchemaRegistry) -> dict[str, str]:
    """Event type -> purpose: the default of the schema's ``purpose`` field (the schema is the policy)."""
    out = {}
    for e in registry:
        for f in e.source["fields"]:
            if f["name"] == "purpose" and isinstance(f.get("default"), str):
                out[e.event_type] = f["default"]
    return out


@dataclass
class Runtime:
    pipeline: BatchPipeline
    requests: PrivacyRequestExecutor
    request_reader: PrivacyRequestReader
    consent: ConsentStore
    audit: AuditLog
    lock: asyncio.Lock
    raw_pruner: RawPruner
    sinks: list[Sink] = field(default_factory=list)
    #: blocking clients the runtime made (and nothing else closes): closed last
    clients: list[Any] = field(default_factory=list)

    async def close(self, wait: float = 5.0) -> None:
        """Flush and close the sinks, then the privacy agent's consumer, the audit log and the
        Redis client. Call once when the worker stops; each part is closed even when another fails
        (logged by type only: a message may hold a key or a value).

        First takes the privacy lock and keeps it: a batch or privacy request still running
        finishes (at most ``wait`` s, a batch holding back for a dependency may not), and none
        starts on closed clients."""
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(self.lock.acquire(), wait)
        except asyncio.TimeoutError:
            log.warning("a batch or privacy request still running after %.0f s: closing its clients anyway", wait)
        steps: list[tuple[str, Callable[[], Any]]] = []
        for sink in self.sinks:
            steps += [(f"{sink.name} flush", sink.flush), (f"{sink.name} close", sink.close)]
        steps += [("privacy requests consumer", lambda: loop.run_in_executor(None, self.request_reader.close)),
                  ("audit log", lambda: loop.run_in_executor(None, self.audit.close))]
        steps += [(f"client {i}", lambda c=c: loop.run_in_executor(None, c.close)) for i, c in enumerate(self.clients)]
        for what, close in steps:
            try:
                await close()
            except Exception as exc:
                log.warning("closing %s failed: %s", what, type(exc).__name__)


def build_runtime(settings: Settings, registry: SchemaRegistry, processor: EventProcessor, metrics: Metrics,
                  actor: str, own_partitions: Callable[[], set[int]],
                  tenants: TenantDirectory | None = None) -> Runtime:
    client = redis_client(settings, Purpose.WORKER)
    if tenants is None:
        tenants = TenantDirectory(settings.tenants, dict(settings.tenant_regimes), client)
    tenants.refresh(force=True)
    provider = LocalKeyFileProvider(settings.master_key_file)
    provider.load()  # fail at start, not on the first event, if the master key is unusable
    keys = KeyStore(client, provider)
    pseudonyms = Pseudonymizer(client, provider)
    consent = ConsentStore(client)
    kafka = KafkaSink(settings.kafka())
    # Signs as writer worker:<app_id>: the key is created and published by the first worker of the group.
    audit = open_audit_log(settings, actor, client=client, provider=provider)
    parking = ParkedRequests(client, provider)
    gate = ConsentGate(consent, pseudonyms, tenants.regimes(), purposes_of(registry), parked=parking.tenants)
    dlq_subjects = DlqSubjects(client, provider)
    dlq = DlqSealer(DlqKeyring(client, provider, settings.dlq_topic), pseudonyms, tenants, dlq_subjects)
    store_writer = StoreWriter(async_redis_client(settings), pseudonyms)
    sinks = build_sinks(SinkDeps(settings, client=client, store_writer=store_writer, producer=kafka))
    handler = PrivacyRequestExecutor(client, keys, pseudonyms, consent, sinks, audit, dlq_subjects=dlq_subjects,
                             metrics=metrics)
    request_reader = PrivacyRequestReader(settings.kafka(), settings.requests_topic, settings.dlq_topic, tenants,
                                          client, consent, handler, kafka, metrics, dlq=dlq, parking=parking)
    lock = asyncio.Lock()
    quarantine = Quarantine(settings.quarantine_topic,
                            quarantine_keyring(client, provider, settings.quarantine_topic,
                                               settings.quarantine_retention_ms),
                            subject_keys_of(keys), pseudonyms, tenants)
    pipeline = BatchPipeline(settings, processor, None, None, keys, metrics,  # type: ignore[arg-type]
                             gate=gate, audit=audit, lock=lock, request_reader=request_reader,
                             own_partitions=own_partitions, dlq=dlq, sinks=sinks, quarantine=quarantine)
    pruner = RawPruner(admin_client(settings))
    return Runtime(pipeline, handler, request_reader, consent, audit, lock, pruner, sinks, [client])
