"""The consent gate on the ingest path: is this event allowed for its purpose, and in the right order?

Order: an event published after a privacy request of its subject must see
that request's effect, even though events and requests arrive on two topics.
Before deciding a batch, the gate reads the end offsets of every partition of
``privacy.requests`` and waits until the privacy agent has applied the
requests up to them. Every request appended before that moment (and so before
any event of the batch was fetched) is then in the consent state the batch
reads. Waiting on all partitions, not only the batch's own, keeps this true
whatever partitioner a producer used.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from confluent_kafka import Consumer, TopicPartition

from streams.consent.state import DropReason, Regime, SubjectState, decide
from streams.consent.store import ConsentStore

log = logging.getLogger(__name__)


class RequestsWatermarks:
    """End offsets of the requests topic's partitions (one ListOffsets per partition)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self._c = Consumer({"bootstrap.servers": bootstrap, "group.id": "streams-watermarks",
                            "enable.auto.commit": False, "logger": logging.getLogger("streams.kafka.consumer")})
        md = self._c.list_topics(topic, timeout=30)
        self.partitions = sorted(md.topics[topic].partitions)

    def __call__(self) -> dict[int, int]:
        return {p: self._c.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10, cached=False)[1]
                for p in self.partitions}

    def close(self) -> None:
        self._c.close()


class RequestsNotApplied(TimeoutError):
    """The privacy agent has not caught up with the requests topic in time: hold the batch back."""


@dataclass
class ConsentGate:
    consent: ConsentStore
    pseudonyms: Callable[[str, str], str]
    regimes: Mapping[str, Regime]
    purposes: Mapping[str, str]  # event type -> purpose
    requests_topic: str
    watermarks: Callable[[], dict[int, int]]

    def wait_applied(self, timeout: float = 10.0) -> None:
        ends = self.watermarks()
        deadline = time.monotonic() + timeout
        while True:
            applied = self.consent.applied(self.requests_topic, ends)
            behind = {p: (applied[p], end) for p, end in ends.items() if applied[p] < end}
            if not behind:
                return
            if time.monotonic() > deadline:
                raise RequestsNotApplied(f"privacy requests not yet applied on partitions {sorted(behind)}")
            time.sleep(0.005)

    def states(self, subjects: Iterable[tuple[str, str]]) -> dict[tuple[str, str], SubjectState]:
        by_tenant: dict[str, dict[str, str]] = {}
        for tenant, subject in subjects:
            by_tenant.setdefault(tenant, {})[subject] = self.pseudonyms(tenant, subject)
        out: dict[tuple[str, str], SubjectState] = {}
        for tenant, subj_to_p in by_tenant.items():
            states = self.consent.states(tenant, set(subj_to_p.values()))
            for subject, p in subj_to_p.items():
                out[(tenant, subject)] = states[p]
        return out

    def decide(self, state: SubjectState, tenant: str, event_type: str) -> DropReason | None:
        return decide(state, self.purposes.get(event_type, ""), self.regimes.get(tenant, Regime.OPT_OUT))
