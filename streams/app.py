"""The Faust application: the ingest agent and the worker's HTTP endpoints, wired from Settings.

Kept short on purpose: the logic lives in ``streams.ingest`` (pure) and
``streams.sinks`` (I/O); this module only connects them to Faust.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
from typing import Any

import faust
from aiohttp.web import Response
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.web.base import BlueprintManager

from streams.api.faust_views import register_api
from streams.api.service import DataApi, build_data_api
from streams.connections import Purpose, faust_broker, redis_client
from streams.ingest.batch import RawRecord
from streams.ingest.processor import EventProcessor
from streams.ingest.tenant_raw import TenantRawIngest, next_offsets
from streams.ops.metrics import Metrics
from streams.runtime import Runtime, build_runtime
from streams.schema.registry import SchemaRegistry
from streams.settings import Settings, SettingsError
from streams.tenancy.registry import TenantDirectory

log = logging.getLogger(__name__)


def _raw_record(event: Any) -> RawRecord:
    m = event.message
    ts = int(m.timestamp * 1000) if m.timestamp else None
    return RawRecord(m.key, m.value, m.topic, m.partition, m.offset, ts)


class _ReadCommittedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's aiokafka consumer, reading ``read_committed``.

    faust-streaming 0.15 reads ``read_committed`` only with ``processing_guarantee=exactly_once``
    (which this project does not use, README "Reliability") and has no setting for it, so the
    worker's consumer would deliver records of aborted transactions on ``events.raw``. aiokafka
    hands ``_isolation_level`` to its fetcher when the consumer starts, so it is set here, before
    that; a version that renames it fails at start rather than read uncommitted data silently.
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        if getattr(consumer, "_isolation_level", None) not in ("read_uncommitted", "read_committed"):
            raise RuntimeError("aiokafka's consumer no longer has _isolation_level: set read_committed another way")
        consumer._isolation_level = "read_committed"
        return consumer


    async def on_thread_stop(self) -> None:
        consumer = self._consumer
        try:
            await super().on_thread_stop()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if consumer is None or (task is not None and task.cancelling()):
                raise  # this task itself is being cancelled: not the case below
            await finish_consumer_stop(consumer)


async def finish_consumer_stop(consumer: Any) -> None:
    """Finish what aiokafka's ``AIOKafkaConsumer.stop`` left when its fetcher's ``close`` raised.

    aiokafka 0.14 ``Fetcher.close`` cancels each pending fetch task and awaits it; a fetch task that
    was sleeping its retry back-off (after a fetch failed: the broker closes a connection that does
    not re-authenticate within ``connections.max.reauth.ms``, and aiokafka does not re-authenticate)
    re-raises that CancelledError out of ``close``, ``stop`` ends half-way (the client's connections
    open) and the worker's consumer thread dies instead of stopping: the worker was killed after its
    stop timeout. Here the remaining fetch tasks are cancelled and awaited, then the client closed.
    """
    fetcher = getattr(consumer, "_fetcher", None)
    for t in list(getattr(fetcher, "_pending_tasks", ())):
        t.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t
    client = getattr(consumer, "_client", None)
    if client is not None:
        await client.close()
    log.info("consumer stopped after a fetch task cancelled in its back-off (aiokafka Fetcher.close)")


class _ReadCommittedConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ReadCommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _ReadCommittedTransport(faust_aiokafka.Transport):
    Consumer = _ReadCommittedConsumer


class _App(faust.App):
    """A Faust app that serves none of Faust's own web pages, and reads its topics ``read_committed``.

    Faust's web server mounts built-in blueprints (``faust.web.base.Web``:
    ``/router`` and ``/table`` always, ``/`` as an index or statistics page,
    ``/graph`` and ``/assignment`` with ``debug``, ``/performance`` when
    enabled), without any authentication: the router names every worker, the
    table pages read table data. Every page of this worker is one of ours
    (health, readiness, metrics and the API), so the web driver is given an
    empty blueprint list before its server is initialized
    (``Web.init_server`` applies them).
    """

    def _new_web(self) -> Any:
        web = super()._new_web()
        web.blueprints = BlueprintManager()
        return web

    def _new_transport(self) -> Any:
        # The consumer reads read_committed (_ReadCommittedConsumerThread); kafka:// only.
        urls = self.conf.broker_consumer
        if any(u.scheme not in ("kafka", "aiokafka") for u in urls):
            raise SettingsError("the worker's broker URLs must be kafka://")
        return _ReadCommittedTransport(urls, self)


def web_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The HTTPS context of the worker's web server, or None for plain HTTP (no certificate configured)."""
    if not settings.web_tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(settings.web_tls_cert, settings.web_tls_key)
    except (OSError, ssl.SSLError) as exc:
        # The paths are configuration, not secrets; the key's content is never shown.
        raise SettingsError(f"STREAMS_WEB_TLS_CERT/STREAMS_WEB_TLS_KEY: cannot load the certificate and key "
                            f"({type(exc).__name__}: {getattr(exc, 'strerror', None) or exc.args[-1]})") from None
    return ctx


def create_app(settings: Settings) -> faust.App:
    """Build the worker's Faust app. Schemas are loaded here, so a bad schema file fails at start."""
    registry = SchemaRegistry.load_dir(settings.schemas_dir)
    # Configured tenants plus those onboarded at run time (`streams tenants create`), re-read by a timer.
    tenants = TenantDirectory(settings.tenants, dict(settings.tenant_regimes),
                              redis_client(settings, Purpose.WORKER),
                              auto_refresh=False)
    processor = EventProcessor(registry, tenants, settings.max_event_bytes, sender_of=settings.tenant_of_raw_topic)
    metrics = Metrics()

    app = _App(
        settings.app_id,
        **faust_broker(settings),
        datadir=str(settings.data_dir),
        store="memory://",
        web_enabled=settings.web_enabled,
        web_port=settings.web_port,
        # Loopback unless configured otherwise (STREAMS_WEB_HOST); HTTPS with a certificate.
        web_bind=settings.web_host,
        web_ssl_context=web_ssl_context(settings),
        consumer_auto_offset_reset="earliest",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        broker_commit_every=settings.batch_size,
        # A killed worker's partitions move to the others after this (the broker's minimum is 6 s).
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 5),
        broker_rebalance_timeout=max(settings.session_timeout, 10.0),
        stream_buffer_maxsize=max(4096, settings.batch_size * 4),
        producer_max_request_size=max(1_048_576, settings.max_event_bytes * 2),
        consumer_max_fetch_size=max(4 * 1_048_576, settings.max_event_bytes * 4),
    )
    raw_topic = app.topic(
        settings.raw_topic, key_type=bytes, value_type=bytes,
        key_serializer="raw", value_serializer="raw", partitions=settings.partitions,
    )
    state: dict[str, Runtime] = {}
    # (raw topic, partition) -> next offset to process (batches this worker finished): what it prunes.
    processed: dict[tuple[str, int], int] = {}

    def mark_processed(offsets: dict[tuple[str, int], int]) -> None:
        for tp, nxt in offsets.items():
            if nxt > processed.get(tp, 0):
                processed[tp] = nxt
    api: dict[str, DataApi] = {}

    def own_partitions() -> set[int]:
        # The partition numbers of events.raw this worker owns; it applies the same numbers of
        # privacy.requests (streams.erasure.reader).
        return {tp.partition for tp in app.consumer.assignment() if tp.topic == settings.raw_topic}

    @app.task
    async def _open_sinks() -> None:
        state["rt"] = await asyncio.get_running_loop().run_in_executor(
            None, build_runtime, settings, registry, processor, metrics, f"worker:{settings.app_id}",
            own_partitions, tenants)
        # The data API once the runtime exists (until then its pages answer 503). Tenants: the live
        # directory (configured + onboarded), re-read by the refresh_tenants timer, and at once after
        # the operator routes created or deleted one (other workers follow within the timer's interval).
        api["api"] = await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(build_data_api, settings, state["rt"].audit, lambda: frozenset(tenants),
                                    on_tenants_changed=lambda: tenants.refresh(force=True)))

    async def runtime() -> Runtime:
        while "rt" not in state:
            await asyncio.sleep(0.01)
        return state["rt"]

    @app.timer(interval=0.1)
    async def apply_privacy_requests() -> None:
        # When no events flow, requests are still carried out within ~100 ms.
        rt = state.get("rt")
        if rt is not None and not rt.lock.locked():
            async with rt.lock:
                await rt.pipeline.apply_requests()

    if settings.raw_prune_interval > 0:
        @app.timer(interval=settings.raw_prune_interval)
        async def prune_raw_events() -> None:
            # Raw PII stays only until processed (streams.ingest.raw_pruning). Best effort:
            # a failure is retried at the next tick, the topic's retention is the backstop.
            rt = state.get("rt")
            if rt is None:
                return
            try:
                moved = await asyncio.get_running_loop().run_in_executor(None, rt.raw_pruner.prune,
                                                                         dict(processed))
            except Exception as exc:
                log.warning("pruning processed raw events failed: %s", type(exc).__name__)
                return
            if moved:
                metrics.inc("streams_raw_prunes_total", len(moved),
                            help="Partitions of raw topics whose processed records were deleted")

    @app.timer(interval=2.0)
    async def refresh_tenants() -> None:
        await asyncio.get_running_loop().run_in_executor(None, tenants.refresh)

    @app.agent(raw_topic, name="ingest")
    async def ingest(stream: faust.StreamT) -> None:
        p = (await runtime()).pipeline
        async for events in stream.take_events(settings.batch_size, within=settings.batch_within):
            records = [_raw_record(e) for e in events]
            task = asyncio.ensure_future(p.handle(records))
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                # Stopping: finish the batch first, because take_events acks it
                # as soon as this loop body exits, finished or not.
                await task
                raise
            # done: every record is in its sinks (handle never returns before)
            mark_processed(next_offsets(records))

    @app.task
    async def ingest_tenant_raw() -> None:
        # The tenants' own raw topics (streams.ingest.tenant_raw): same pipeline, same lock.
        p = (await runtime()).pipeline
        await TenantRawIngest(settings, p.handle, mark_processed).run_forever()

    @app.page("/health")
    async def health(web: Any, request: Any) -> Response:
        return web.json({"status": "ok"})

    @app.page("/ready")
    async def ready(web: Any, request: Any) -> Response:
        rt = state.get("rt")
        ok = rt is not None and await rt.pipeline.store.ping()
        return web.json({"ready": ok}, status=200 if ok else 503)

    # The API's pages, and /metrics (operator keys only: the metrics name every tenant and its volume).
    register_api(app, lambda: api.get("api"), metrics.render)

    @app.on_before_shutdown.connect
    async def _on_shutdown(_app: Any, **_: Any) -> None:
        # Faust sends this after its consumer stopped and the streams are empty. One receiver, so the
        # order is ours: the API's denials use the audit log, which the runtime then closes.
        # The last window's aggregated denial counts go to the audit trail before the worker exits (bounded:
        # with the broker away the counts are lost rather than holding up the shutdown).
        if "api" in api:
            try:
                await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, api["api"].close), 15)
            except Exception as exc:
                log.warning("api: the last denial counts were not audited (%s)", type(exc).__name__)
        # Nothing else closes the sinks, the privacy agent's consumer, the audit log or Redis.
        if "rt" in state:
            await state["rt"].close()

    app.streams_metrics = metrics  # type: ignore[attr-defined]
    return app
