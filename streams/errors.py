"""The root of the project's exceptions, and the markers that say how a fault is handled.

Every package's ``exceptions.py`` derives from ``StreamsError``. Two class attributes say what a
caller does with an error, so ``streams.ops.retry`` can decide without importing every package
(this module is at the bottom of the import graph: it imports nothing of ``streams``):

- ``transient``: a fault of the system (Redis, the broker, the master key, the audit trail) that
  clears by itself. The worker holds the batch back and retries; it never sends events to the
  DLQ for it.
- ``tenant_fault``: a fault of one tenant's own data, proven not to be the system's. Raised at
  once, never retried, so the caller sets that tenant's events aside and the others go on. It
  wins over ``transient`` (a damaged tenant key is also a key integrity error).
"""

from __future__ import annotations

from abc import ABC
from typing import ClassVar


class StreamsError(Exception):
    """Base of every error the project raises on purpose."""

    transient: ClassVar[bool] = False
    tenant_fault: ClassVar[bool] = False


class Transient(ABC):
    """Virtual base of the ``StreamsError`` classes marked ``transient``: ``isinstance(exc,
    Transient)`` and ``issubclass(cls, Transient)`` read the marker (an ``except`` clause does
    not see virtual bases, so callers test with ``isinstance``)."""

    @classmethod
    def __subclasshook__(cls, other: type) -> bool:
        return bool(issubclass(other, StreamsError) and other.transient)


class TenantFault(ABC):
    """Virtual base of the ``StreamsError`` classes marked ``tenant_fault``."""

    @classmethod
    def __subclasshook__(cls, other: type) -> bool:
        return bool(issubclass(other, StreamsError) and other.tenant_fault)
