"""Holding back: retry a step with back-off while a dependency is down, instead of failing the batch.

Used wherever the worker must not acknowledge input before its effects are
written: the ingest batch and the privacy agent.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, TypeVar

import redis
from confluent_kafka import KafkaException

from streams.errors import TenantFault, Transient
from streams.ops import metric_catalogue as M
from streams.ops.metrics import Metrics

log = logging.getLogger(__name__)
T = TypeVar("T")

# Faults of the system, not of an event: retried, never raised. The project's own errors say so
# themselves (``StreamsError.transient``, read through the ``Transient`` marker), so this module
# imports no package's exceptions. Third-party types are listed: KafkaException too, because a
# broker call from a worker thread (an admin request, say) fails that way while the broker
# restarts, and an exception out of a Faust timer or agent stops the whole worker.
TRANSIENT: tuple[type, ...] = (redis.RedisError, OSError, KafkaException, Transient)

# Faults of one tenant's own data, proven not to be the system's (``StreamsError.tenant_fault``):
# raised at once, never retried, so the caller sets that tenant's events aside and the other
# tenants go on. Checked first: TenantKeyDamaged is also a (transient) KeyIntegrityError, and a
# KeyIntegrityError that KeyStore could not pin on one tenant (the master key may be wrong) still
# holds back.
TENANT_FAULTS: tuple[type, ...] = (TenantFault,)


async def hold_back(what: str, fn: Callable[[], Awaitable[T]], metrics: Metrics, max_delay: float) -> T:
    """Run ``fn`` until it succeeds; TRANSIENT faults are logged and retried with back-off.

    TENANT_FAULTS and every other exception propagate at once."""
    delay = 0.1
    while True:
        try:
            return await fn()
        except Exception as exc:
            # isinstance, not an except clause: the markers are virtual bases, which except ignores.
            if isinstance(exc, TENANT_FAULTS) or not isinstance(exc, TRANSIENT):
                raise
            metrics.inc(M.SINK_RETRIES, sink=what)
            log.warning("%s unavailable (%s: %s); retrying in %.1fs", what, type(exc).__name__, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
