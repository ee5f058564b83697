"""A tenant consumer written with only confluent-kafka, fastavro and schemas/clean/ decodes the stream."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest

from streams.ingest import samples
from streams.ingest.producer import EventProducer
from streams.schema.registry import SchemaRegistry
from streams.settings import REPO_ROOT
from tests.kafka_read import read_topic

pytestmark = pytest.mark.e2e

EXAMPLE = REPO_ROOT / "examples" / "consume_tenant_stream.py"


def test_example_imports_nothing_of_the_project():
    tree = ast.parse(EXAMPLE.read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            modules.add((node.module or "").split(".")[0])
    assert "streams" not in modules
    assert modules <= {"argparse", "glob", "io", "json", "fastavro", "confluent_kafka"}


def test_example_decodes_the_tenant_stream(make_settings, start_worker, tmp_path):
    s = make_settings()
    tenant = sorted(s.tenants)[0]
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    events = [samples.signup(tenant, "s1"), samples.order(tenant, "s1"), samples.support(tenant, "s2")]
    producer = EventProducer(s.kafka_bootstrap, s.raw_topic, registry)
    producer.send_many(events)
    producer.flush()
    start_worker(s)
    assert len(read_topic(s.kafka_bootstrap, s.tenant_topic(tenant), expect=3, timeout=60)) == 3

    # Only the published files, copied elsewhere, and a clean interpreter without the project on its path.
    schemas = tmp_path / "clean"
    schemas.mkdir()
    for f in (REPO_ROOT / "schemas" / "clean").glob("*/v*.avsc"):
        (schemas / f.parent.name).mkdir(exist_ok=True)
        (schemas / f.parent.name / f.name).write_text(f.read_text())
    out = subprocess.run(
        [sys.executable, "-I", "-c",
         "import runpy, sys; sys.argv=sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__');"
         "assert not any(m == 'streams' or m.startswith('streams.') for m in sys.modules), 'imported the project'",
         str(EXAMPLE), "--bootstrap", s.kafka_bootstrap, "--tenant", tenant, "--schemas", str(schemas),
         "--max", "3", "--idle-timeout", "20"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    decoded = [json.loads(line) for line in out.stdout.splitlines()]
    assert sorted(d["event"]["event_id"] for d in decoded) == sorted(e["event_id"] for e in events)
    assert {d["schema"].rsplit(".", 1)[-1] for d in decoded} == {"CustomerSignup", "OrderPlaced", "SupportMessage"}
    assert all(d["event"]["lineage"]["source_topic"] == s.raw_topic for d in decoded)
