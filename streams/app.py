"""The Faust application: the ingest agent and the worker's HTTP endpoints, wired from Settings.

Kept short on purpose: the logic lives in ``streams.ingest`` (pure) and
``streams.sinks`` (I/O); this module only connects them to Faust.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from typing import Any

import faust
from aiohttp.web import Response
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.web.base import BlueprintManager

from streams.api.faust_views import register_api
from streams.connections import Purpose, faust_broker, redis_client
from streams.ingest.batch import RawRecord
from streams.ingest.processor import EventProcessor
from streams.ingest.offset_gaps import GapReader, PartitionCursor
from streams.ingest.tenant_raw import TenantRawIngest, next_offsets
from streams.ops.health import Offsets, PartitionProgress, PrivacyBacklog, readiness, set_build_info
from streams.ops.metrics import CONTENT_TYPE, Metrics
from streams.schema.registry import SchemaRegistry
from streams.settings import Settings, SettingsError
from streams.tenancy.registry import TenantDirectory
from streams.worker_service import WorkerService

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


HOLE_SEEK_BACK_S = 5.0  # at most one seek back per partition this often


class _ReadCommittedConsumer(faust_aiokafka.Consumer):
    """Faust's consumer, reading read_committed, that never commits past a record it did not finish.

    Faust (0.15) drops records its stream reads during a rebalance with the previous generation's
    id, or while flow control is paused; it expects the seek to the committed offset after the
    rebalance to read them again. When they come after that seek they are never read again, and
    its commit takes the first run of finished offsets wherever it starts (its check for a hole at
    the head is off by one, and skipped when the partition has no committed offset yet). Seen on
    the real stack: a worker that took over a partition nobody had committed yet committed past
    ~500 records it never processed (and the raw pruner then deleted them).

    So: a partition without a committed offset starts at its log start, explicitly (it becomes the
    offset expected next), and a commit only ever covers a run that starts there. The ingest agent
    finds the dropped records (``streams.ingest.offset_gaps``) and reads them again in order
    (``read_again``), or finds the offsets empty (``accept_gap``)."""

    @property
    def guarded_topics(self) -> frozenset[str]:
        return getattr(self.app, "guarded_topics", frozenset())  # create_app: the raw topic

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ReadCommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def perform_seek(self) -> None:
        await super().perform_seek()
        fresh = [tp for tp in self.assignment()
                 if tp.topic in self.guarded_topics and self._committed_offset.get(tp) is None]
        if not fresh:
            return
        starts = await self.earliest_offsets(*fresh)
        known = {tp: int(off) for tp, off in starts.items() if off is not None and off >= 0}
        if known:
            await self.seek_wait(known)
            self._committed_offset.update(known)
            log.info("partitions without a committed offset start at their log start: %s",
                     ", ".join(f"{tp.topic}[{tp.partition}]@{off}" for tp, off in sorted(known.items())))

    def _new_offset(self, tp: Any) -> int | None:
        expected = self._committed_offset.get(tp) if tp.topic in self.guarded_topics else None
        acked = self._acked.get(tp)
        if expected is not None and acked:
            gaps = self._gap.get(tp)
            first = min([min(acked)] + ([min(i.begin for i in gaps)] if gaps else []))
            # Faust's own bookkeeping is off by one here (it takes the committed offset, the next to
            # read, for the last one read, and a transaction marker right after it is never in its
            # gaps): one offset at the head is taken for a marker. A longer hole is not committed
            # past: the ingest agent reads it again (streams.ingest.offset_gaps) or finds it empty
            # and says so (accept_gap).
            if first > expected + 1:
                log.debug("%s[%d]: not committing past offsets %d..%d", tp.topic, tp.partition, expected, first - 1)
                return None
        return super()._new_offset(tp)

    def accept_gap(self, topic: str, partition: int, lo: int, hi: int) -> None:
        """Offsets ``lo`` .. ``hi - 1`` hold no records to deliver (checked): commits may pass them."""
        self._gap[TP(topic, partition)].addi(lo, hi)

    async def read_again(self, topic: str, partition: int, offset: int) -> None:
        """Seek the partition back to ``offset`` (at most every HOLE_SEEK_BACK_S per partition)."""
        tp = TP(topic, partition)
        now = time.monotonic()
        last = getattr(self, "_hole_seeks", {})
        self._hole_seeks = last
        if now - last.get(tp, 0.0) < HOLE_SEEK_BACK_S:
            return
        last[tp] = now
        try:
            earliest = (await self.earliest_offsets(tp)).get(tp)
            if earliest is not None and earliest > offset:  # deleted meanwhile (retention): start there
                self._committed_offset[tp] = earliest
            await self.seek_wait({tp: max(offset, earliest or 0)})
        except Exception as exc:  # revoked meanwhile, or stopping: the next assignment seeks anyway
            log.warning("%s[%d]: seeking back failed (%s)", topic, partition, type(exc).__name__)


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


def _assignment(app: faust.App, topic: str | None = None) -> set[Any]:
    """The consumer's assigned partitions (of ``topic``); none while it is not started."""
    try:
        tps = app.consumer.assignment()
    except Exception:  # not started yet, or stopping
        return set()
    return {tp for tp in tps if topic is None or tp.topic == topic}


def _fetch_position(app: faust.App, tp: Any) -> int | None:
    """The aiokafka consumer's fetch position of ``tp`` as it stands, or None when it has none yet.

    Never ``await consumer.position(tp)``: that runs in the consumer's thread through Faust's method
    queue (two workers, shared with getmany, commit and seek) and blocks there until the position
    is known. Called from a timer after a rebalance, two such calls held both workers while the
    seek that would set the position queued behind them: the worker stopped fetching (a partition
    stalled for good). A read of the partition's state (an int) needs no thread and waits for
    nothing; the attributes are private, so any change of them gives None, not an error."""
    try:
        state = app.consumer._thread._consumer._subscription.subscription.assignment.state_value(tp)
        return int(state._position) if state is not None and state._position is not None else None
    except Exception:  # not started, stopping, unassigned meanwhile, or aiokafka's internals changed
        return None


def _assigned_offsets(app: faust.App, topic: str, processed: dict[tuple[str, int], int]
                      ) -> dict[tuple[str, int], Offsets]:
    """What the worker knows of each assigned partition of ``topic`` (``streams.ops.health.Offsets``).
    Faust keeps the committed and last read offsets (``_committed_offset``, ``_read_offset``: no
    public reader); aiokafka the high watermark of its last fetch and the fetch position. Nothing
    here waits or calls into the consumer's thread."""
    consumer = app.consumer
    out: dict[tuple[str, int], Offsets] = {}
    for tp in _assignment(app, topic):
        try:
            end = consumer.highwater(tp)
        except Exception:  # revoked meanwhile or the consumer stopping: known next time
            end = None
        out[(tp.topic, tp.partition)] = Offsets(
            end=end, processed=processed.get((tp.topic, tp.partition)),
            committed=getattr(consumer, "_committed_offset", {}).get(tp), position=_fetch_position(app, tp),
            last_read=getattr(consumer, "_read_offset", {}).get(tp))
    return out


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


def _faust_app(settings: Settings) -> "_App":
    """The Faust app configured from the settings (no agents yet)."""
    return _App(
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


def create_app(settings: Settings) -> faust.App:
    """Build the worker's Faust app. Schemas are loaded here, so a bad schema file fails at start.

    Longer than most functions here on purpose: it is only the Faust wiring, one short closure per
    agent, timer and page, each handing over to the worker's service (``streams.worker_service``)."""
    registry = SchemaRegistry.load_dir(settings.schemas_dir)
    # Configured tenants plus those onboarded at run time (`streams tenants create`), re-read by a timer.
    tenants = TenantDirectory(settings.tenants, dict(settings.tenant_regimes),
                              redis_client(settings, Purpose.WORKER),
                              auto_refresh=False)
    processor = EventProcessor(registry, tenants, settings.max_event_bytes, sender_of=settings.tenant_of_raw_topic)
    metrics = Metrics()
    set_build_info(metrics, [e.source for e in registry])
    progress, backlog = PartitionProgress(metrics), PrivacyBacklog(metrics)

    app = _faust_app(settings)
    app.guarded_topics = frozenset({settings.raw_topic})  # type: ignore[attr-defined]
    raw_topic = app.topic(
        settings.raw_topic, key_type=bytes, value_type=bytes,
        key_serializer="raw", value_serializer="raw", partitions=settings.partitions,
    )

    def own_partitions() -> set[int]:
        # The partition numbers of events.raw this worker owns; it applies the same numbers of
        # privacy.requests (streams.erasure.reader).
        return {tp.partition for tp in _assignment(app, settings.raw_topic)}

    service = WorkerService(settings, registry, processor, tenants, metrics, own_partitions)

    @app.task
    async def start_worker_service() -> None:
        await service.start()

    @app.timer(interval=0.1)
    async def apply_privacy_requests() -> None:
        await service.apply_privacy_requests()  # when no events flow, requests are still carried out in ~100 ms

    if settings.raw_prune_interval > 0:
        @app.timer(interval=settings.raw_prune_interval)
        async def prune_raw_events() -> None:
            # events.raw only up to what the group committed: a record Faust dropped is below it
            # (_ReadCommittedConsumer) and must stay to be read again.
            committed = getattr(app.consumer, "_committed_offset", {})
            await service.prune_raw_events({(tp.topic, tp.partition): committed.get(tp)
                                            for tp in _assignment(app, settings.raw_topic)}, settings.raw_topic)

    @app.timer(interval=2.0)
    async def refresh_tenants() -> None:
        await service.refresh_tenants()

    @app.timer(interval=2.0)
    async def refresh_progress() -> None:
        # Lag and stalled time of every assigned partition (streams.ops.health), from what the
        # consumer knows already: no broker round trip and no call into its thread (_fetch_position).
        # Faust's own topics (its assignor's leader topic) are left out.
        progress.update(_assigned_offsets(app, settings.raw_topic, service.processed))

    @app.timer(interval=5.0)
    async def refresh_privacy_backlog() -> None:
        # Unapplied privacy requests of every partition: one ListOffsets and one Redis read.
        rt = service.runtime
        if rt is None:
            return
        try:
            backlog.update(await asyncio.get_running_loop().run_in_executor(None, rt.request_reader.behind))
        except Exception as exc:  # Kafka or Redis away: the gauges keep their last values
            log.debug("privacy request backlog unknown: %s", type(exc).__name__)

    @app.agent(raw_topic, name="ingest")
    async def ingest(stream: faust.StreamT) -> None:
        p = (await service.wait_runtime()).pipeline
        loop = asyncio.get_running_loop()
        gap_reader = GapReader(settings.kafka())
        # Records in offset order, none skipped (streams.ingest.offset_gaps): where each partition of
        # this assignment starts is what the consumer committed (or its log start).
        cursor = PartitionCursor(lambda tp: getattr(app.consumer, "_committed_offset", {}).get(tp), gap_reader)
        try:
            async for events in stream.take_events(settings.batch_size, within=settings.batch_within):
                cursor.new_assignment(app.consumer_generation_id)
                records, holes, empty = await loop.run_in_executor(None, cursor.split_and_gaps,
                                                                   [_raw_record(e) for e in events])
                for g in empty:
                    app.consumer.accept_gap(g.topic, g.partition, g.expected, g.first)
                for h in holes:
                    log.warning("%s[%d]: offsets %d..%d hold records the consumer did not hand over (dropped at a "
                                "rebalance): the partition is read again from %d", h.topic, h.partition, h.expected,
                                h.first - 1, h.expected)
                    await app.consumer.read_again(h.topic, h.partition, h.expected)
                if not records:
                    continue
                task = asyncio.ensure_future(p.handle(records))
                try:
                    await asyncio.shield(task)
                except asyncio.CancelledError:
                    # Stopping: finish the batch first, because take_events acks it
                    # as soon as this loop body exits, finished or not.
                    await task
                    raise
                # done: every record is in its sinks (handle never returns before)
                service.mark_processed(next_offsets(records))
        finally:
            gap_reader.close()  # no group membership, nothing to commit: quick

    @app.task
    async def ingest_tenant_raw() -> None:
        # The tenants' own raw topics (streams.ingest.tenant_raw): same pipeline, same lock.
        p = (await service.wait_runtime()).pipeline
        await TenantRawIngest(settings, p.handle, service.mark_processed).run_forever()

    @app.page("/health")
    async def health(web: Any, request: Any) -> Response:
        return web.json({"status": "ok"})  # kept for existing probes: the same as /live

    @app.page("/live")
    async def live(web: Any, request: Any) -> Response:
        # Answered at all means the event loop runs; no dependency is asked (a Redis blip must not
        # have every worker restarted).
        return web.json({"live": True})

    @app.page("/ready")
    async def ready(web: Any, request: Any) -> Response:
        rt = service.runtime
        reasons = readiness(rt is not None, rt is not None and await rt.pipeline.store.ping(),
                            len(_assignment(app, settings.raw_topic)), backlog.stale(own_partitions()),
                            settings.raw_topic)
        if reasons:
            return web.json({"ready": False, "reasons": reasons}, status=503)
        return web.json({"ready": True})

    # The API's pages, and /metrics (operator keys only: the metrics name every tenant and its volume).
    register_api(app, lambda: service.api, metrics.render, CONTENT_TYPE)

    @app.on_before_shutdown.connect
    async def _on_shutdown(_app: Any, **_: Any) -> None:
        # Faust sends this after its consumer stopped and the streams are empty: the service's
        # stop order is then ours (streams.worker_service).
        await service.stop()

    app.worker_service = service  # type: ignore[attr-defined]
    app.streams_metrics = metrics  # type: ignore[attr-defined]
    return app
