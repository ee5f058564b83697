"""What the broker says about a consumer group: the fault tests poll it instead of sleeping."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import AdminClient

from streams.connections import client_config


@dataclass(frozen=True)
class GroupView:
    state: str
    members: frozenset[str]  # member ids
    assigned: int  # partitions assigned over all members

    def __str__(self) -> str:
        return f"{self.state} with {len(self.members)} member(s), {self.assigned} partition(s) assigned"


def describe_group(target: "str | dict", group: str) -> GroupView:
    admin = AdminClient({**client_config(target), "log_level": 0})
    desc = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
    state = desc.state.name if isinstance(desc.state, ConsumerGroupState) else str(desc.state)
    assigned = sum(len(m.assignment.topic_partitions) for m in desc.members if m.assignment is not None)
    return GroupView(state, frozenset(m.member_id for m in desc.members), assigned)


def wait_group(target: "str | dict", group: str, until: Callable[[GroupView], bool], timeout: float,
               what: str) -> GroupView:
    """Polls the group's description every 0.5 s until ``until`` holds; fails after ``timeout`` s
    naming ``what`` was awaited and what the broker said last."""
    deadline = time.monotonic() + timeout
    view: GroupView | None = None
    while True:
        try:
            view = describe_group(target, group)
            if until(view):
                return view
        except Exception as exc:  # the coordinator may be loading: keep asking until the deadline
            view = view or GroupView(f"unknown ({type(exc).__name__}: {exc})", frozenset(), 0)
        if time.monotonic() > deadline:
            raise AssertionError(f"group {group}: {what} not seen in {timeout:.0f} s; last: {view}")
        time.sleep(0.5)


def committed_lag(target: "str | dict", group: str, topic: str) -> dict[int, int]:
    """Per partition of ``topic``: records after the group's committed offset (all of them when none)."""
    from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition

    admin = AdminClient({**client_config(target), "log_level": 0})
    parts = admin.list_topics(topic, timeout=10).topics[topic].partitions
    req = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in parts])
    committed = {tp.partition: tp.offset for tp in
                 admin.list_consumer_group_offsets([req], request_timeout=10)[group].result().topic_partitions}
    c = Consumer({**client_config(target), "group.id": f"{group}-lag-probe", "log_level": 0})
    try:
        lag = {}
        for p in parts:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            done = committed.get(p, -1)
            lag[p] = high - max(done, low)
        return lag
    finally:
        c.close()


def wait_committed(target: "str | dict", group: str, topic: str, timeout: float) -> None:
    """Until ``group`` has committed every record of ``topic`` (it processed them all): polls the
    broker's committed offsets against the high watermarks; fails with the lag after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        lag = committed_lag(target, group, topic)
        if not any(lag.values()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"group {group} has not committed all of {topic} in {timeout:.0f} s; lag {lag}")
        time.sleep(0.5)
