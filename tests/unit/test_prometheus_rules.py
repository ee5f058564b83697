"""The Prometheus alert rules and the Grafana dashboard match the metrics the workers export.

Every metric an alert or a panel queries is declared in ``streams.ops.metric_catalogue`` (a
renamed metric would leave an alert that never fires); with Debian's ``prometheus`` package
installed, ``promtool`` checks the rules and runs their unit tests (``alerts_test.yml``: the
stalled-partition, parked-requests and DLQ-rate alerts fire on the series that should fire them
and stay quiet on the others)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from streams.ops.metric_catalogue import BY_NAME

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "streams.json"
_METRIC = re.compile(r"\b(streams_[a-z0-9_]+?)(?:_bucket|_count|_sum)?\b")


def _exprs() -> list[str]:
    rules = yaml.safe_load(RULES.read_text())
    out = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    out += [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]
    return out


def test_every_queried_metric_is_in_the_catalogue():
    named = {m for e in _exprs() for m in _METRIC.findall(e)}
    assert len(named) >= 15  # the scan finds names at all
    assert named - set(BY_NAME) == set()


def test_every_alert_says_what_to_do():
    for g in yaml.safe_load(RULES.read_text())["groups"]:
        for r in g["rules"]:
            assert r["labels"]["severity"] in ("page", "ticket"), r["alert"]
            assert r["annotations"]["summary"] and r["annotations"]["action"], r["alert"]


def test_the_readme_explains_every_alert():
    readme = (DEPLOY.parent / "README.md").read_text()
    for g in yaml.safe_load(RULES.read_text())["groups"]:
        for r in g["rules"]:
            assert f"`{r['alert']}`" in readme, r["alert"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) not installed; "
                    "the metric names are still checked above")
def test_promtool_checks_the_rules_and_runs_their_tests():
    for args in (["check", "rules", str(RULES)], ["test", "rules", str(RULES.parent / "alerts_test.yml")]):
        r = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
