"""The metric catalogue (names, labels, README) and the Metrics facade over prometheus_client."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.ops import metric_catalogue as M
from streams.ops.metric_catalogue import CATALOGUE, MetricDef
from streams.ops.metrics import Metrics

README = Path(__file__).resolve().parents[2] / "README.md"
NAME = re.compile(r"^streams_[a-z][a-z0-9_]*[a-z0-9]$")
# Units in a name other than the base ones (prometheus.io/docs/practices/naming: seconds, bytes).
NON_BASE_UNITS = {"ms", "millis", "milliseconds", "us", "microseconds", "ns", "minutes", "hours", "days",
                  "kb", "mb", "gb", "kib", "mib", "kilobytes", "megabytes", "percent"}
# A label named like a person or one record holds unbounded, possibly personal values.
PERSONAL = {"subject", "user", "username", "email", "mail", "phone", "ip", "address", "name", "person",
            "customer", "account", "id", "key", "token", "event", "request", "value", "payload", "field"}


def _families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


@pytest.mark.parametrize("d", CATALOGUE, ids=lambda d: d.name)
def test_catalogue_names_follow_prometheus_naming(d: MetricDef) -> None:
    assert NAME.match(d.name), d.name
    words = d.name.split("_")
    assert not NON_BASE_UNITS & set(words), f"{d.name}: base units only"
    assert (d.kind == "counter") == d.name.endswith("_total"), f"{d.name}: _total on counters, and only there"
    if d.kind == "histogram":
        unit = d.name.rsplit("_", 1)[-1]
        assert unit in ("seconds", "bytes", "records"), f"{d.name}: a histogram names its unit"
        assert d.buckets and list(d.buckets) == sorted(d.buckets)
    else:
        assert d.buckets is None
    if any(w in ("duration", "latency", "age", "time", "stalled") for w in words) and d.kind != "counter":
        assert d.name.endswith("_seconds"), f"{d.name}: a time is in seconds"
    if any(w in ("size", "bytes") for w in words):
        assert d.name.endswith(("_bytes", "_records")), d.name
    assert d.help and d.help[0].isupper() and "\n" not in d.help
    for label in d.labels:
        assert re.fullmatch(r"[a-z][a-z_]*", label), label
        assert not PERSONAL & set(label.split("_")), f"{d.name}: label {label!r} looks like personal data"
        assert label != "le" and label != "quantile"


def test_catalogue_names_are_unique_and_indexed() -> None:
    names = [d.name for d in CATALOGUE]
    assert len(names) == len(set(names))
    assert set(M.BY_NAME) == set(names)
    assert len(CATALOGUE) >= 25


def test_readme_lists_every_metric_with_its_type_and_labels() -> None:
    text = README.read_text()
    section = text[text.index("## Operating"):]
    section = section[:section.index("\n## ", 1)] if "\n## " in section[1:] else section
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(streams_[a-z0-9_]+)` \|.*$", section, re.M)}
    assert set(rows) == {d.name for d in CATALOGUE}, "README's Operating table and the catalogue differ"
    for d in CATALOGUE:
        cells = [c.strip() for c in rows[d.name].strip("|").split("|")]
        assert cells[1] == d.kind, d.name
        assert cells[2] == (", ".join(f"`{lb}`" for lb in d.labels) or "-"), d.name


def test_facade_counts_and_reads_back() -> None:
    m = Metrics(process=False)
    m.inc(M.SINK_RETRIES, sink="keys")
    m.inc(M.SINK_RETRIES, 2, sink="keys")
    m.inc(M.SINK_RETRIES, sink="store")
    m.inc(M.STORE_REFUSED_ERASED, 3)
    assert m.value(M.SINK_RETRIES, sink="keys") == 3
    assert m.value("streams_sink_retries_total", sink="store") == 1  # by name: tests read it so
    assert m.value(M.SINK_RETRIES, sink="kafka") == 0
    assert m.total(M.SINK_RETRIES) == 4
    assert m.value(M.STORE_REFUSED_ERASED) == 3
    m.observe(M.BATCH_STAGE_DURATION, 0.2, stage="consent")
    m.observe(M.BATCH_STAGE_DURATION, 0.3, stage="keys")
    assert m.value(M.BATCH_STAGE_DURATION, stage="keys") == 1 and m.total(M.BATCH_STAGE_DURATION) == 2
    m.set(M.CONSUMER_LAG, 7, topic="events.raw", partition=1)
    assert m.value(M.CONSUMER_LAG, topic="events.raw", partition=1) == 7
    m.remove(M.CONSUMER_LAG, topic="events.raw", partition=1)
    assert m.series(M.CONSUMER_LAG) == []


def test_facade_refuses_what_the_catalogue_does_not_declare() -> None:
    m = Metrics(process=False)
    with pytest.raises(KeyError):
        m.inc(MetricDef("streams_invented_total", "counter", "Made up"))
    with pytest.raises(KeyError):
        m.value("streams_invented_total")
    with pytest.raises(ValueError):
        m.inc(M.SINK_RETRIES)  # a declared label missing
    with pytest.raises(ValueError):
        m.inc(M.SINK_RETRIES, sink="keys", subject="u-1")  # an undeclared one
    with pytest.raises(TypeError):
        m.observe(M.SINK_RETRIES, 1.0, sink="keys")  # a counter is not observed
    with pytest.raises(KeyError):
        m.inc("streams_sink_retries_total", sink="keys")  # type: ignore[arg-type]  # by definition only


def test_render_parses_as_prometheus_text() -> None:
    m = Metrics()
    m.inc(M.EVENTS_PROCESSED, 1_234_567, tenant="acme")
    m.inc(M.EVENTS_DLQ, tenant=M.NO_TENANT, reason="undecodable")
    m.observe(M.EVENT_E2E_LATENCY, 0.07)
    m.observe(M.BATCH_SIZE, 100)
    m.set(M.BUILD_INFO, 1, version="0.1.0", schemas=3, policy="abc")
    m.set(M.CONSUMER_LAG, 5, topic="events.raw", partition=0)
    fams = _families(m.render())
    assert {d.base_name for d in CATALOGUE} <= set(fams)
    for d in CATALOGUE:
        assert fams[d.base_name].type == d.kind and fams[d.base_name].documentation == d.help
    processed = {s.labels["tenant"]: s.value for s in fams["streams_events_processed"].samples}
    assert processed == {"acme": 1_234_567}  # large counts keep their precision
    e2e = {s.name: s.value for s in fams["streams_event_e2e_latency_seconds"].samples if not s.labels.get("le")}
    assert e2e == {"streams_event_e2e_latency_seconds_count": 1, "streams_event_e2e_latency_seconds_sum": 0.07}
    assert [s.labels for s in fams["streams_consumer_lag_records"].samples] == [
        {"topic": "events.raw", "partition": "0"}]
    assert "process_cpu_seconds" in fams and "python_info" in fams  # process and platform collectors
    assert not [f for f in fams if f.endswith("_created")]


def test_registries_are_per_instance() -> None:
    a, b = Metrics(), Metrics()
    a.inc(M.RAW_PRUNES)
    assert a.value(M.RAW_PRUNES) == 1 and b.value(M.RAW_PRUNES) == 0


def test_thread_safety() -> None:
    m = Metrics(process=False)

    def work() -> None:
        for _ in range(2000):
            m.inc(M.PRIVACY_REQUESTS, type="erase")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert m.value(M.PRIVACY_REQUESTS, type="erase") == 16000
