"""Carrying out one privacy request: consent state, and for an erasure every copy, then a receipt.

Called by ``streams.erasure.reader`` for each request read from ``privacy.requests``
(at least once: a request replayed after a crash runs again, every step is
idempotent, and a receipt is written only once every step is done).

Erasure steps, in order:
1. ``state``     the subject is marked erased: its later events are dropped from now on
   (fence)       wait until the batches other workers had in flight when the marker was set (in
                 the store, not yet in their later sinks) have left (``streams.erasure.fence``;
                 bounded by their leases; the tombstone step records ``in_flight_waited`` and
                 ``in_flight_lapsed``). Later store writes refuse the erased subject, so after the
                 wait no event of it can still reach a sink. Then the subject's event ids are read
                 from the store's subject index, which holds every delivered event (a batch is in
                 the store before any other sink).
2-3. one step per sink (``streams.sinks.base``), in reverse write order, the store last:
   ``tombstone`` one tombstone per event of the subject on the tenant topic (key ``<subject>/<event
                 id>``, null value, headers saying why), after every such event on its partition;
                 the topic is compacted, so the broker then removes the events from its disk
   ``store``     every store document of the subject and its index entries deleted
   (a sink added to ``streams.sinks.registry.SINKS`` adds its own step here, before these)
4. ``key``       the subject key destroyed: every token of the subject, in every copy, is irreversible
   ``dlq``       the DLQ names subjects only by pseudonym; the way back from the subject's
                 pseudonym to its id (``streams.dlq.subjects``) is deleted, so nothing in or beside
                 the DLQ names the subject any more (the step says so: ``subject_named: "pseudonym
                 only"``, ``resolvable: false``)
5. ``aof``       Redis rewrites its AOF (and its RDB snapshot, if snapshots are on) so the deleted
                 values leave the disk (``streams.erasure.aof``); the step says what was rewritten,
                 or that nothing persists
6. ``audit``     the request and its steps written to the audit trail (pseudonym only)

Steps 1-4 run per request; the receipt is then ``pending`` and the request
queued in Redis (``privacy:pending-aof``, durable across a crash). Steps 5-6
run in ``finish_pending`` once the reader has carried out the requests it
read: one AOF rewrite serves every erasure queued before it, and the receipt
turns ``done`` only after both.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable, Sequence

import redis

from streams.audit.log import AuditLog
from streams.consent.requests import PrivacyRequest
from streams.consent.state import apply
from streams.consent.store import ConsentStore, receipt_key, requests_index
from streams.erasure.aof import rewrite_aof
from streams.erasure.fence import FenceResult, wait_in_flight
from streams.keyspace import PENDING_AOF_KEY
from streams.ops.failpoints import failpoint
from streams.ops import metric_catalogue as M
from streams.ops.metrics import Metrics
from streams.privacy.keys import KeyStore
from streams.sinks.base import Sink, SubjectErasure, SubjectIndex

log = logging.getLogger(__name__)

PENDING_AOF = PENDING_AOF_KEY  # erasures waiting for an AOF rewrite (streams/keyspace.py)


def _now() -> int:
    return int(time.time() * 1000)


class PrivacyRequestExecutor:
    """Carries out one request at a time (``handle``) and the AOF step of the erasures it queued
    (``finish_pending``). ``sinks``: every sink in write order (``streams.sinks.registry``), the
    subject index first."""

    def __init__(self, client: redis.Redis, keys: KeyStore, pseudonyms: Callable[[str, str], str],
                 consent: ConsentStore, sinks: Sequence[Sink], audit: AuditLog, dlq_subjects: Any = None,
                 metrics: Metrics | None = None) -> None:
        if not sinks or not isinstance(sinks[0], SubjectIndex):
            raise ValueError("the first sink must be the subject index (the store)")
        self.client = client
        self.keys = keys
        self.pseudonyms = pseudonyms
        self.consent = consent
        self.sinks = list(sinks)
        self.index: SubjectIndex = sinks[0]
        self.audit = audit
        self.aof_timeout = 60.0  # s an erasure waits for Redis' files to be rewritten
        self.dlq_subjects = dlq_subjects  # streams.dlq.subjects.DlqSubjects
        self.metrics = metrics or Metrics()

    def handle(self, req: PrivacyRequest) -> dict[str, Any]:
        """Run every step of ``req`` and return its receipt. Raises when a step fails (the
        request is then retried, not acknowledged); a completed request is not run again."""
        done = self.consent.receipt(req.tenant, req.request_id)
        if done and done.get("status") == "done":
            return done
        if done and done.get("status") == "pending" and self.client.sismember(PENDING_AOF, f"{req.tenant}|{req.request_id}"):
            return done  # replayed after its deletes were done: only the AOF step is left, and it is queued
        parked = done.get("parked") if done and done.get("status") == "parked" else None
        who = self.pseudonyms(req.tenant, req.subject)  # first: a tenant fault here changes nothing
        steps: list[dict[str, Any]] = []

        def step(name: str, **detail: Any) -> None:
            steps.append({"step": name, "at_ms": _now(), **detail})
            failpoint(f"{'erasure' if req.type.erases else 'request'}.{name}")  # tests crash here

        state = apply(self.consent.state(req.tenant, who), req)
        self.consent.put_state(req.tenant, who, state)
        step("state", opted_out=state.opted_out, erased=state.erased, suppressed=state.suppressed,
             granted=sorted(state.granted), revoked=sorted(state.revoked))

        if req.type.erases:
            # The fence (streams.erasure.fence): batches of other workers that wrote the store
            # before the marker above may not have produced to the topic yet; wait for them, so
            # the index read below has their events and the tombstones land after them.
            fence = wait_in_flight(self.client, req.tenant)
            self._count_fence(req, fence)
            erasure = SubjectErasure(req.request_id, req.tenant, req.subject,
                                     tuple(self.index.subject_event_ids(req.tenant, req.subject)),
                                     fence.waited_for, fence.lapsed)
            # Reverse write order: the index last, so a run that fails half-way and is replayed
            # still finds every event id (streams.sinks.base).
            for sink in reversed(self.sinks):
                step(sink.erase_step, **sink.erase_subject(erasure))
            existed = self.keys.destroy_subject_key(req.tenant, req.subject)
            step("key", destroyed=existed)
            # Quarantined originals (streams.dlq.quarantine) sealed with that key are unreadable from
            # here on; those sealed with a quarantine key a redrive skips (the state above says
            # erased) and they go with their key at the end of the quarantine's retention.
            step("quarantine", sealed_with_subject_key="unreadable (the key is destroyed)",
                 sealed_with_quarantine_key="never redriven; destroyed with its key within the retention")
            self._observe_erasure(req.filed_at_ms, "effective")
            forgotten = self.dlq_subjects.forget(req.tenant, who) if self.dlq_subjects is not None else 0
            step("dlq", subject_named="pseudonym only", resolvable=False, resolve_mappings_deleted=forgotten)
            # The AOF rewrite takes as long as the whole store takes to write out: it runs after
            # the worker's lock is released (finish_pending), shared by every erasure before it.
            receipt = self._receipt(req, who, steps, "pending", parked)
            pipe = self.client.pipeline(transaction=True)
            pipe.set(receipt_key(req.tenant, req.request_id), json.dumps(receipt, separators=(",", ":")))
            pipe.zadd(requests_index(req.tenant), {req.request_id: req.filed_at_ms})
            pipe.sadd(PENDING_AOF, f"{req.tenant}|{req.request_id}")
            pipe.execute()
            return receipt

        return self._complete(req.tenant, self._receipt(req, who, steps, "pending", parked))

    def _count_fence(self, req: PrivacyRequest, fence: FenceResult) -> None:
        if fence.waited_for:
            log.info("erasure %s waited %d ms for %d in-flight batches of tenant %s", req.request_id,
                     fence.waited_ms, fence.waited_for, req.tenant)
            self.metrics.inc(M.ERASURE_FENCE_WAITS)
            self.metrics.inc(M.ERASURE_FENCE_BATCHES, fence.waited_for)
        if fence.lapsed:
            # Not waited for (a dead or paused worker): such a batch tombstones its own events of
            # an erased subject if it comes back (BatchPipeline._tombstone_lapsed).
            log.warning("erasure %s: %d in-flight batches of tenant %s lapsed without finishing (not waited for)",
                        req.request_id, fence.lapsed, req.tenant)
            self.metrics.inc(M.ERASURE_FENCE_LAPSED, fence.lapsed)

    def _receipt(self, req: PrivacyRequest, who: str | None, steps: list[dict[str, Any]], status: str,
                 parked: dict[str, Any] | None = None) -> dict[str, Any]:
        receipt = {
            "request_id": req.request_id, "type": req.type.name, "tenant": req.tenant, "subject": who,
            "purpose": req.purpose, "filed_at_ms": req.filed_at_ms, "filed_by": req.actor,
            "status": status, "steps": steps,
        }
        if parked is not None:
            receipt["parked"] = parked  # kept once carried out: the receipt shows the wait
        return receipt

    def note_parked(self, req: PrivacyRequest, reason: str) -> None:
        """The receipt and audit record of a request parked by a fault of its tenant
        (``streams.erasure.parking``): status ``parked`` with the reason; no subject named, since
        the fault may be the tenant's pseudonym secret itself."""
        done = self.consent.receipt(req.tenant, req.request_id)
        if done and done.get("status") in ("done", "pending"):
            return  # carried out before (a replay): nothing to park
        self.consent.put_receipt(req.tenant, self._receipt(req, None, [], "parked", {"at_ms": _now(), "reason": reason}))
        self.audit.append("privacy.parked", req.tenant, None, f"request {req.request_id} parked", {
            "request_id": req.request_id, "type": req.type.name, "reason": reason})

    def _complete(self, tenant: str, receipt: dict[str, Any]) -> dict[str, Any]:
        """Audit the request with its steps, then mark its receipt done (the last thing written)."""
        self.audit.append(f"privacy.{receipt['type']}", tenant, receipt["subject"], f"request {receipt['request_id']}", {
            "request_id": receipt["request_id"], "filed_by": receipt["filed_by"], "purpose": receipt["purpose"],
            "steps": ",".join(s["step"] for s in receipt["steps"]),
        })
        receipt["steps"].append({"step": "audit", "at_ms": _now()})
        receipt["status"] = "done"
        receipt["completed_at_ms"] = _now()
        self.consent.put_receipt(tenant, receipt)
        if any(st["step"] == "key" for st in receipt["steps"]):  # an erasure
            self._observe_erasure(receipt["filed_at_ms"], "done")
        return receipt

    def _observe_erasure(self, filed_at_ms: int, milestone: str) -> None:
        """An erasure's time from its filing (the filer's clock) to ``milestone`` (the receipt's step times)."""
        self.metrics.observe(M.ERASURE_DURATION, max(0.0, (_now() - filed_at_ms) / 1000), milestone=milestone)

    def finish_pending(self) -> int:
        """Complete erasures waiting for the AOF rewrite: one rewrite for all of them. Durable:
        the pending set is in Redis, so a worker that crashed leaves them to the next run."""
        members = self.client.smembers(PENDING_AOF)
        if not members:
            return 0
        # Starts after every pending erasure's deletes. Raises when the rewrite failed or timed out:
        # the receipts stay pending (and queued) and the next call tries again.
        aof = rewrite_aof(self.client, self.aof_timeout)
        failpoint("erasure.aof")
        done = 0
        for m in sorted(x.decode() if isinstance(x, bytes) else x for x in members):
            tenant, _, request_id = m.partition("|")
            receipt = self.consent.receipt(tenant, request_id)
            if receipt is not None and receipt.get("status") != "done":
                receipt["steps"].append({"step": "aof", "at_ms": _now(), **aof})
                self._complete(tenant, receipt)
                done += 1
            self.client.srem(PENDING_AOF, m)
        return done
