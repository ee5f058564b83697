"""The ``Sink`` interface: every place a clean event is copied to, and how each copy is erased.

A sink holds a copy of tenants' clean events. The worker writes each batch to every configured
sink, an erasure runs ``erase_subject`` on every sink, and a tenant deletion ``drop_tenant`` on
every sink (``streams.sinks.registry`` lists them). So "an erasure reaches every copy" holds by
construction: a new sink cannot be added without saying how it erases a subject and drops a
tenant (the methods are abstract).

Order (the list's order is declared in ``streams.sinks.registry.SINKS``):

- **Writes go in list order, and the first sink is the index** (``SubjectIndex``: the Redis
  store). Every later sink gets a batch only after the index holds it, so the index's subject
  entries name every event any sink holds (a crash between two writes leaves at most an event
  the index names and a later sink lacks: an extra tombstone, never a copy no erasure finds).
  Only the index may refuse events (``Written.refused``: their subject was erased since the
  batch's consent check) or tenants (``Written.deleted``); the batch's later sinks then do not
  get them. Later sinks take the whole batch or raise.
- **Erasures and tenant drops go in reverse list order**, the index last. The event ids of the
  subject are read from the index once, before any sink erases (``SubjectErasure.event_ids``):
  the tenant topic needs them for its tombstones (one per event key), and a sink that cannot
  find a subject's copies by itself (a compacted topic has no subject index) gets them the same
  way instead of keeping an index of its own. Removing the index last means an erasure that
  crashes half-way and runs again (requests are replayed until their receipt is written) still
  finds every id.

Failures: ``write`` raising a ``StreamsError`` marked ``transient`` (``SinkUnavailable``) holds
the batch back and writes it again to that sink (``streams.ops.retry``), so a write must be
idempotent (same key, same value; consumers drop duplicates by event id). ``TenantTopicsMissing``
sets those tenants' events aside (DLQ ``tenant_unavailable``) and writes the batch again. Any
other exception stops the batch (never acknowledged). ``erase_subject`` and ``drop_tenant``
raising leave the request or deletion unfinished: no receipt says done, and it runs again, so
both must be idempotent. ``flush`` and ``close`` are called once when the worker stops, after
its last batch; a failure there is logged, never raised (nothing is acknowledged after it).

``write``, ``flush`` and ``close`` run on the worker's event loop; ``erase_subject`` and
``drop_tenant`` are blocking (the privacy agent runs in a thread, tenant deletion in the CLI or
the operator API).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

from streams.records import Accepted, Dropped, Rejected

Outcome = Accepted | Rejected | Dropped


@dataclass(frozen=True)
class Batch:
    """One batch, as the sinks get it."""

    #: unique per process and batch (the index registers it as in flight: ``streams.erasure.fence``)
    batch_id: str
    #: every outcome of the batch in input order; sinks of clean events take the ``Accepted`` ones
    outcomes: Sequence[Outcome]
    #: the sealed DLQ records of the ``Rejected`` outcomes in order, for a sink with ``carries_dlq``
    dlq_values: Sequence[bytes] = ()
    #: the quarantine records of those rejections a fix could rescue (``streams.dlq.quarantine``),
    #: written with the DLQ records by the same sink
    quarantine: Sequence[Any] = ()

    @property
    def accepted(self) -> list[Accepted]:
        return [o for o in self.outcomes if isinstance(o, Accepted)]


@dataclass(frozen=True)
class Written:
    """What a write did. A sink that returns None wrote everything it was given."""

    written: int = 0
    #: events not written because their subject is erased (later sinks must not get them either)
    refused: tuple[Accepted, ...] = ()
    #: tenants whose deleted marker is set: nothing of them was written
    deleted: frozenset[str] = frozenset()
    #: tenants where the batch is now registered as in flight (the index; left after the last sink)
    registered: frozenset[str] = frozenset()


@dataclass(frozen=True)
class SubjectErasure:
    """One subject's erasure, as each sink gets it. ``subject`` is the raw id: never log it, and
    never put it in a step's detail (receipts name subjects by pseudonym)."""

    request_id: str
    tenant: str
    subject: str
    #: the subject's event ids, read from the index after the in-flight fence, before any sink erased
    event_ids: tuple[str, ...]
    #: batches the fence waited for / whose lease lapsed (``streams.erasure.fence.FenceResult``)
    in_flight_waited: int = 0
    in_flight_lapsed: int = 0


class Sink(ABC):
    """A copy of clean events: written per batch, erased per subject, dropped per tenant."""

    #: names the sink in logs and in the hold-back metric (``streams_sink_retries_total{sink=...}``)
    name: ClassVar[str]
    #: the receipt step of ``erase_subject`` (privacy request receipts)
    erase_step: ClassVar[str]
    #: the receipt step of ``drop_tenant`` (tenant deletion receipts)
    drop_step: ClassVar[str]
    #: whether ``write`` needs ``Batch.dlq_values`` (sealing them costs Redis round trips)
    carries_dlq: ClassVar[bool] = False

    @abstractmethod
    async def write(self, batch: Batch) -> Written | None:
        """Write the batch; return only once it is durable in this sink (the worker then
        acknowledges the input). Idempotent."""

    @abstractmethod
    def erase_subject(self, erasure: SubjectErasure) -> dict[str, Any]:
        """Remove every copy of the subject's events; return what was removed (the receipt
        step's detail: counts and names, no subject id). Idempotent; blocking."""

    @abstractmethod
    def drop_tenant(self, tenant: str) -> dict[str, Any]:
        """Remove everything of the tenant; return what was removed (the receipt step's detail).
        Called after the tenant's deleted marker is set and the workers' fence has passed, so no
        batch of it is still being written. Idempotent; blocking."""

    async def flush(self) -> None:
        """Make what was written durable (a no-op where ``write`` already waits for it)."""

    async def close(self) -> None:
        """Release the sink's clients. Called once, after ``flush``, when the worker stops."""


class SubjectIndex(ABC):
    """The first sink: it knows which events of a subject every sink holds."""

    @abstractmethod
    def subject_event_ids(self, tenant: str, subject: str) -> list[str]:
        """The ids of the subject's events, sorted (blocking)."""


def check_sinks(sinks: Sequence[Sink]) -> None:
    """Raise ``ValueError`` unless the first sink is the index and the list names each step once
    (two sinks with one step name would make the receipt ambiguous)."""
    if not sinks or not isinstance(sinks[0], SubjectIndex):
        raise ValueError("the first sink must be the subject index (the store)")
    for attr in ("erase_step", "drop_step", "name"):
        names = [getattr(s, attr) for s in sinks]
        if len(set(names)) != len(names):
            raise ValueError(f"two sinks share the {attr} {sorted(names)}")
