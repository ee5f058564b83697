"""The worker's metrics: a facade over prometheus_client, one registry per worker.

Every metric is declared in ``streams.ops.metric_catalogue`` (name, type, help, labels); ``Metrics``
takes only those definitions and exactly their labels, so a call site cannot invent a name or a
label. One ``CollectorRegistry`` per ``Metrics`` (never prometheus_client's global default: tests
build many workers and runtimes in one process), holding the catalogue's metrics and the
process and platform collectors (``process_*``, ``python_info``). ``render`` is the Prometheus text
format of ``/metrics``.
"""

from __future__ import annotations

from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.exposition import generate_latest

from streams.ops.metric_catalogue import BY_NAME, CATALOGUE, MetricDef

# No ``<name>_created`` series beside every counter and histogram: they double the page for a
# timestamp nobody alerts on (process-wide, and this process' only registries are ours).
prometheus_client.disable_created_metrics()

CONTENT_TYPE = "text/plain; version=0.0.4"  # the text format generate_latest writes (charset: utf-8)

_TYPES = {"counter": Counter, "gauge": Gauge, "histogram": Histogram}


class Metrics:
    def __init__(self, process: bool = True) -> None:
        """``process``: register the process and platform collectors too (the worker does)."""
        self.registry = CollectorRegistry(auto_describe=True)
        self._m: dict[str, Any] = {}
        for d in CATALOGUE:
            kwargs: dict[str, Any] = {"registry": self.registry, "labelnames": d.labels}
            if d.buckets is not None:
                kwargs["buckets"] = d.buckets
            self._m[d.name] = _TYPES[d.kind](d.base_name, d.help, **kwargs)
        if process:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)

    def _child(self, d: MetricDef, kind: str, labels: dict[str, Any]) -> Any:
        if not isinstance(d, MetricDef) or BY_NAME.get(d.name) is not d:
            raise KeyError(f"{getattr(d, 'name', d)!r}: not a definition of streams.ops.metric_catalogue")
        if d.kind != kind:
            raise TypeError(f"{d.name} is a {d.kind}, not a {kind}")
        if set(labels) != set(d.labels):
            raise ValueError(f"{d.name} takes the labels {d.labels}, got {tuple(sorted(labels))}")
        m = self._m[d.name]
        return m.labels(**{k: str(v) for k, v in labels.items()}) if d.labels else m

    def inc(self, d: MetricDef, amount: float = 1.0, **labels: Any) -> None:
        if amount:
            self._child(d, "counter", labels).inc(amount)
        else:
            self._child(d, "counter", labels)  # checked, and the series shows 0

    def observe(self, d: MetricDef, value: float, **labels: Any) -> None:
        self._child(d, "histogram", labels).observe(value)

    def set(self, d: MetricDef, value: float, **labels: Any) -> None:
        self._child(d, "gauge", labels).set(value)

    def remove(self, d: MetricDef, **labels: Any) -> None:
        """Drop one labelled series (a gauge of a partition no longer assigned, say)."""
        self._child(d, d.kind, labels)
        self._m[d.name].remove(*(str(labels[n]) for n in d.labels))

    def series(self, d: MetricDef) -> list[dict[str, str]]:
        """The label sets ``d`` has a series for."""
        out = []
        for fam in self.registry.collect():
            if fam.name == d.base_name:
                out += [dict(s.labels) for s in fam.samples if s.name in (d.name, d.base_name, f"{d.name}_count")]
        return out

    # -------------------------------------------------------------- reading (tests, readiness)
    def _sample(self, d: MetricDef) -> str:
        return f"{d.name}_count" if d.kind == "histogram" else d.name

    def value(self, metric: MetricDef | str, **labels: Any) -> float:
        """A series' value (a histogram's: its count); 0 when it has none."""
        d = metric if isinstance(metric, MetricDef) else BY_NAME[metric]
        v = self.registry.get_sample_value(self._sample(d), {k: str(x) for k, x in labels.items()})
        return v or 0.0

    def total(self, metric: MetricDef | str) -> float:
        """The sum over every label set (a histogram's: its observations)."""
        d = metric if isinstance(metric, MetricDef) else BY_NAME[metric]
        sample = self._sample(d)
        return sum(s.value for fam in self.registry.collect() if fam.name == d.base_name
                   for s in fam.samples if s.name == sample)

    def render(self) -> str:
        return generate_latest(self.registry).decode()
