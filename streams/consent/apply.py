"""The privacy agent's step for one record of ``privacy.requests``.

Parses and checks the request (a bad one goes to the DLQ as
``invalid_request`` and changes nothing), carries it out under the worker's
privacy lock (so no ingest batch of this worker interleaves with an erasure),
then records the partition offset as applied, which releases ingest batches
waiting for it (``streams.consent.gate``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time

from streams.consent.exceptions import InvalidRequest
from streams.consent.requests import parse
from streams.dlq.reasons import Reason
from streams.dlq.record import encode_dlq
from streams.ingest.processor import Rejected, SourceRef, key_hint
from streams.ops.metrics import Metrics
from streams.ops.retry import hold_back
from streams.settings import Settings
from streams.sinks.kafka_sink import OutRecord

log = logging.getLogger(__name__)


async def apply_privacy_request(rt, loop: asyncio.AbstractEventLoop, settings: Settings, value: bytes | None,
                                key: bytes | None, partition: int, offset: int, metrics: Metrics) -> None:
    delay_cap = settings.sink_retry_max_seconds

    def thread(fn, *args):
        return lambda: loop.run_in_executor(None, fn, *args)

    try:
        req = parse(value)
        if key != req.key:
            raise InvalidRequest("record key must be '<tenant>/<subject>' of the request")
        if req.tenant not in settings.tenants:
            raise InvalidRequest("tenant is not an onboarded tenant")
    except InvalidRequest as exc:
        rej = Rejected(reason=Reason.INVALID_REQUEST, detail=str(exc),
                       source=SourceRef(settings.requests_topic, partition, offset),
                       payload_size=len(value or b""),
                       payload_sha256=hashlib.sha256(value).hexdigest() if value else None, key_hint=key_hint(key))
        out = [OutRecord(settings.dlq_topic, None, encode_dlq(rej), [("reason", rej.reason.value.encode())])]
        await hold_back("dlq", lambda: rt.pipeline.kafka.deliver_async(out), metrics, delay_cap)
        metrics.inc("streams_events_dlq_total", reason=rej.reason.value)
    else:
        started = time.monotonic()
        async with rt.lock:
            receipt = await hold_back("privacy request", thread(rt.requests.handle, req), metrics, delay_cap)
        metrics.inc("streams_privacy_requests_total", help="Privacy requests carried out", type=req.type.value)
        log.info("privacy request %s (%s) done in %.0f ms", req.request_id, req.type.value,
                 (time.monotonic() - started) * 1000)
        del receipt
    await hold_back("privacy applied offset",
                    thread(rt.consent.mark_applied, settings.requests_topic, partition, offset + 1), metrics, delay_cap)
