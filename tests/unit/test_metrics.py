"""The in-process metrics registry and its Prometheus text."""

from __future__ import annotations

import threading

import pytest

from streams.ops.metrics import Metrics


def test_counters_and_labels():
    m = Metrics()
    m.inc("events_total")
    m.inc("events_total", 2)
    m.inc("dlq_total", reason="undecodable")
    m.inc("dlq_total", 3, reason="oversized")
    m.inc("multi", a="1", b="2")
    assert m.value("events_total") == 3
    assert m.value("dlq_total", reason="oversized") == 3
    assert m.value("dlq_total", reason="undecodable") == 1
    assert m.value("dlq_total") == 0  # unlabelled series is a different series
    assert m.value("multi", b="2", a="1") == 1  # label order does not matter
    assert m.total("dlq_total") == 4
    assert m.total("nope") == 0


def test_render():
    m = Metrics()
    m.inc("b_total", help="B things", reason="x")
    m.inc("b_total", 2, help="ignored later", reason="y")
    m.inc("a_total", 5)
    text = m.render()
    assert text.endswith("\n")
    lines = text.splitlines()
    assert lines == [
        "# TYPE a_total counter",
        "a_total 5",
        "# HELP b_total B things",
        "# TYPE b_total counter",
        'b_total{reason="x"} 1',
        'b_total{reason="y"} 2',
    ]


def test_empty_render():
    assert Metrics().render() == "\n"


def test_thread_safety():
    m = Metrics()

    def work():
        for _ in range(2000):
            m.inc("c", reason="r")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert m.value("c", reason="r") == 16000


def test_large_counter_keeps_precision():
    m = Metrics()
    m.inc("streams_events_processed_total", 1_234_567)
    line = m.render().splitlines()[-1]
    assert float(line.split()[-1]) == 1_234_567
