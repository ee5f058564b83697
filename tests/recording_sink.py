"""A test-only sink (``streams.sinks.base.Sink``) that keeps what it is given in memory: what a
new sink must do, and proof that the worker, an erasure and a tenant deletion reach every sink."""

from __future__ import annotations

from typing import Any

from streams.sinks.base import Batch, Sink, SubjectErasure


class RecordingSink(Sink):
    name = "recording"
    erase_step = "recording"
    drop_step = "recording"

    def __init__(self, log: list[str] | None = None) -> None:
        #: (tenant, subject, event id) of every event it holds
        self.events: set[tuple[str, str, str]] = set()
        self.batches: list[str] = []
        self.erasures: list[SubjectErasure] = []
        self.dropped: list[str] = []
        self.closed = False
        #: shared with other sinks' wrappers in tests: the order calls arrive in
        self.log = log if log is not None else []

    async def write(self, batch: Batch) -> None:
        self.log.append(f"{self.name}.write")
        self.batches.append(batch.batch_id)
        self.events |= {(a.tenant, a.subject, a.event_id) for a in batch.accepted}

    def erase_subject(self, erasure: SubjectErasure) -> dict[str, Any]:
        self.log.append(f"{self.name}.erase")
        self.erasures.append(erasure)
        mine = {e for e in self.events if e[:2] == (erasure.tenant, erasure.subject)}
        self.events -= mine
        # Counts only: a receipt never names the subject.
        return {"events": len(mine), "ids_from_index": len(erasure.event_ids)}

    def drop_tenant(self, tenant: str) -> dict[str, Any]:
        self.log.append(f"{self.name}.drop")
        self.dropped.append(tenant)
        mine = {e for e in self.events if e[0] == tenant}
        self.events -= mine
        return {"events": len(mine)}

    async def close(self) -> None:
        self.closed = True
