"""``streams demo``: the whole pipeline on the local stack, narrated for a newcomer.

Starts Redis and Kafka (``streams stack up``), one worker process, publishes
sample events for two tenants plus one bad event of each kind, then shows
what came out where. Ctrl-C at any point stops the worker and the stack;
nothing is left running. Running it again works: it reads only what this
run produced (from the end offsets it noted before publishing).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from typing import Any

from streams.cli import base
from streams.cli.text import plural
from streams.settings import REPO_ROOT, Settings

DEMO_TENANTS = ("acme", "globex")


def register(sub: base.Subparsers) -> None:
    sp = base.add_command(sub, "demo", "run the whole pipeline on the local stack with sample events", cmd_demo,
                          "Start the local stack and a worker, publish sample events for two tenants (plus one bad "
                          "event of each kind), and show the tenant streams, the DLQ with reasons and the store's "
                          "answers. Ctrl-C stops everything.",
                          own_logging=True)
    sp.add_argument("--events", type=int, default=20, help="valid events per tenant (default 20)")
    sp.add_argument("--keep-running", action="store_true", help="keep the stack and worker up until Ctrl-C")


def cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(base.settings(), keep_running=args.keep_running, events=args.events)


def _say(text: str = "") -> None:
    print(text, flush=True)


def _step(n: int, text: str) -> None:
    _say(f"\n\033[1m[{n}] {text}\033[0m" if sys.stdout.isatty() else f"\n[{n}] {text}")


def _end_offsets(kafka: dict[str, str], topic: str) -> dict[int, int]:
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    c = Consumer({**kafka, "group.id": "streams-demo-offsets"})
    try:
        for attempt in range(20):  # right after a broker start, leadership may still be moving
            try:
                md = c.list_topics(topic, timeout=10)
                return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                        for p in md.topics[topic].partitions}
            except KafkaException:
                if attempt == 19:
                    raise
                time.sleep(0.5)
        raise AssertionError("unreachable")
    finally:
        c.close()


def _read_from(kafka: dict[str, str], topic: str, start: dict[int, int], expect: int, timeout: float) -> list[Any]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({**kafka, "group.id": f"streams-demo-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, o) for p, o in start.items()])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expect and time.monotonic() < deadline:
            m = c.poll(0.3)
            if m is not None and not m.error():
                out.append(m)
    finally:
        c.close()
    return out


def _short(event: dict[str, Any]) -> str:
    skip = {"tenant_id", "lineage", "purpose", "event_time"}
    parts = []
    for k, v in event.items():
        if k in skip:
            continue
        text = json.dumps(v, default=str)
        parts.append(f"{k}={text if len(text) <= 32 else text[:29] + '...'}")
    return " ".join(parts)


def run_demo(settings: Settings, keep_running: bool = False, events: int = 20) -> int:
    # Long because it is the narrated script of the demo, read top to bottom: its nine steps share the
    # worker, its environment, the noted offsets and the store reader, and one try/finally stops
    # everything on Ctrl-C or failure. Splitting it (a class with a method per step) is a separate change.
    from streams.cli.errors import UsageError
    from streams.consumer.clean_decoder import CleanDecoder
    from streams.ingest import samples
    from streams.ingest.producer import EventProducer
    from streams.ops.localstack import LocalStack
    from streams.ops.topics import ensure_topics
    from streams.schema.registry import SchemaRegistry
    from streams.sinks.store import StoreReader

    missing = [t for t in DEMO_TENANTS if t not in settings.tenants]
    if missing:
        raise UsageError(f"the demo needs tenants {', '.join(DEMO_TENANTS)} in STREAMS_TENANTS")
    stack = LocalStack(settings)
    worker: subprocess.Popen | None = None
    log_dir = settings.stack_dir / "logs"
    worker_log = log_dir / "worker.log"

    def stop_all() -> None:
        if worker is not None and worker.poll() is None:
            _say("stopping the worker ...")
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
        _say("stopping Kafka and Redis ...")
        stack.down()
        _say("all stopped; nothing left running.")

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        _step(1, f"Starting Redis (AOF on) and Apache Kafka {settings.kafka_version} in KRaft mode")
        _say(f"    data and logs under {settings.stack_dir}; first run fetches Kafka's jars with Maven")
        stack.up()
        _say(f"    Kafka ready at {settings.kafka_bootstrap}, Redis at {settings.redis_url}")

        _step(2, "Declaring topics (the broker does not auto-create any)")
        for name, state in ensure_topics(settings).items():
            _say(f"    {name:<24} {state}")

        registry = SchemaRegistry.load_dir(settings.schemas_dir)
        decoder = CleanDecoder.from_dir(settings.schemas_dir / "clean")
        start = {t: _end_offsets(settings.kafka(), settings.tenant_topic(t)) for t in DEMO_TENANTS}
        dlq_start = _end_offsets(settings.kafka(), settings.dlq_topic)

        _step(3, "Starting a pipeline worker (Faust): `streams worker`")
        log_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1", STREAMS_STACK_DIR=str(settings.stack_dir))
        with open(worker_log, "ab") as log:
            worker = subprocess.Popen([sys.executable, "-m", "streams.cli.main", "worker"], env=env,
                                      stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, start_new_session=True)
        deadline = time.monotonic() + 90
        while "Worker ready" not in worker_log.read_text(errors="replace"):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise UsageError(f"the worker did not start; see {worker_log}")
            time.sleep(0.3)
        _say(f"    worker pid {worker.pid} ready; log: {worker_log}; metrics (operator key): http://127.0.0.1:{settings.web_port}/metrics")

        run = uuid.uuid4().hex[:4]
        _step(4, f"Publishing {plural(events, 'valid event')} per tenant ({', '.join(DEMO_TENANTS)}) and one bad event of each kind")
        producer = EventProducer(settings.kafka(), settings.raw_topic, registry)
        rng = random.Random()
        makers = [samples.signup, samples.order, samples.support]
        published: Counter = Counter()
        for tenant in DEMO_TENANTS:
            for i in range(events):
                fmt = "json" if i % 5 == 0 else "avro"
                producer.send(makers[i % 3](tenant, f"demo-{run}-{i % 4}", rng), fmt)  # type: ignore[arg-type]
                published[tenant] += 1
        # Every demo subject gets a signup (with an email to show tokenization and detokenize).
        for tenant in DEMO_TENANTS:
            for i in range(4):
                producer.send(samples.signup(tenant, f"demo-{run}-{i}", rng))
                published[tenant] += 1
        bad = samples.bad_records("acme", registry, settings.max_event_bytes)
        for reason, key, value in bad:
            producer.send_raw(key, value)
        producer.flush()
        _say(f"    broker acknowledged {plural(producer.acked, 'record')} "
             f"({sum(published.values())} valid as Avro single-object or JSON, {len(bad)} bad)")
        del producer  # close its connections now, not at exit after the broker is gone

        _step(5, "Clean tenant streams (tenant.<t>.events, Avro, decoded with schemas/clean/ only)")
        delivered: Counter = Counter()  # distinct events read back from each tenant topic
        for tenant in DEMO_TENANTS:
            msgs = _read_from(settings.kafka(), settings.tenant_topic(tenant), start[tenant],
                              published[tenant], 60)
            delivered[tenant] = len({m.key() for m in msgs if m.value() is not None})
            _say(f"    {settings.tenant_topic(tenant)}: {plural(len(msgs), 'event')}")
            for m in msgs[:3]:
                name, ev = decoder.decode(m.value())
                subject, _, event_id = m.key().decode().partition("/")  # key: <subject>/<event id>
                _say(f"      key={subject + '/' + event_id[:8] + '…':<22} {name.rsplit('.', 1)[-1]:<15} "
                     f"{_short(ev)[:140]}")

        _step(6, "Dead-letter queue (events.dlq): reason codes, no payload")
        dlq = _read_from(settings.kafka(), settings.dlq_topic, dlq_start, len(bad), 60)
        for m in dlq:
            d = json.loads(m.value())
            src = d["source"]
            extra = f" field={d['field']}" if d.get("field") else ""
            _say(f"    {d['reason']:<17} {src['topic']}[{src['partition']}]@{src['offset']:<6}"
                 f" fp={(d.get('payload_fingerprint') or '-')[:14]}{extra}  {d['detail']}")

        _step(7, "The store (Redis, per-tenant keyspace, indexed by subject and by type and time)")
        reader = StoreReader.from_url(settings.redis_url)
        for tenant in DEMO_TENANTS:
            _say(f"    {tenant}: {plural(reader.count(tenant), 'event')} in all; "
                 + ", ".join(f"{t}={reader.count(tenant, t)}" for t in ("customer_signup", "order_placed", "support_message")))
        subject = f"demo-{run}-0"
        docs = reader.by_subject("acme", subject)
        _say(f"    `streams store acme --subject {subject}` -> {plural(len(docs), 'event')}:")
        for d in docs[:4]:
            _say(f"      {d['event_type']:<16} event_id={d['event_id']} at {d['event']['event_time']}")

        _step(8, "Privacy: tokens are reversible only through audited detokenize, until erasure")
        token_doc = next((d for d in docs if d["event"].get("email")), None) or next(
            (d for d in reader.by_subject("acme", subject, limit=50) if d["event"].get("email")), None)

        def cli(*argv: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "streams.cli.main", *argv], env=env, capture_output=True,
                                  text=True, timeout=120, cwd=REPO_ROOT)

        if token_doc is not None:
            token = token_doc["event"]["email"]
            _say(f"    email in the clean event: {token[:40]}...")
            r = cli("detokenize", "acme", subject, token, "--reason", "demo: support ticket", "--actor", "demo")
            _say(f"    `streams detokenize acme {subject} <token> --reason ...` -> "
                 f"{'(the original email, audited)' if r.returncode == 0 else r.stderr.strip()}")
        r = cli("privacy", "file", "acme", "--type", "erase", "--subject", subject, "--reason", "demo erasure",
                "--wait", "60")
        if r.returncode == 0:
            receipt = json.loads("\n".join(r.stdout.splitlines()[1:]))
            steps = ", ".join(f"{st['step']}+{st['at_ms'] - receipt['filed_at_ms']}ms" for st in receipt["steps"])
            _say(f"    `streams privacy file acme --type erase --subject {subject}` -> receipt {receipt['request_id']}")
            _say(f"      steps: {steps}")
            _say(f"    store now answers {plural(len(reader.by_subject('acme', subject)), 'event')} for {subject}")
            if token_doc is not None:
                r2 = cli("detokenize", "acme", subject, token, "--reason", "demo: after erasure", "--actor", "demo")
                _say(f"    detokenize after erasure -> {r2.stderr.strip().split(': ', 1)[-1]}")
        else:
            _say(f"    erasure not completed: {r.stderr.strip()[-300:]}")
        r = cli("audit", "verify")
        lines = r.stdout.strip().splitlines() or [r.stderr.strip()]
        _say(f"    `streams audit verify` -> {lines[0]}")
        for line in lines[1:4]:  # the writers and their chains (signed records)
            _say(f"      {line.strip()}")

        accounted = sum(published.values()) + len(bad)
        _step(9, "Reconciliation")
        # Delivered is what was read back from the tenant topics (step 5), not what was published.
        ok = sum(delivered.values()) == sum(published.values()) and len(dlq) == len(bad)
        _say(f"    published {accounted} = delivered {sum(delivered.values())} + DLQ {len(dlq)}"
             f"{'  OK' if ok else '  MISMATCH (some events not read back yet)'}")
        _say("\n    Try: streams tail acme --from-beginning --max 5 | streams dlq --from-beginning --timeout 5"
             " | streams store globex --type order_placed | streams privacy report acme")
        if keep_running:
            _say("\nworker and stack keep running; Ctrl-C stops everything.")
            while worker.poll() is None:
                time.sleep(1)
        return 0
    except KeyboardInterrupt:
        _say("\ninterrupted")
        return 130
    finally:
        stop_all()
