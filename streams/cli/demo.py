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

    from streams.connections import consumer_config

    c = Consumer(consumer_config(kafka, "streams-demo-offsets"))
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

    from streams.connections import consumer_config

    c = Consumer(consumer_config(kafka, f"streams-demo-{uuid.uuid4().hex[:6]}"))
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


class _DemoRun:
    """One run of the demo: the stack, the worker, and what each step notes for the later ones.

    A step per method, called in order by ``run_demo``, which also stops
    everything (``stop_all``) however the run ends.
    """

    def __init__(self, settings: Settings, events: int) -> None:
        from streams.devstack.stack import LocalStack

        self.s, self.events = settings, events
        self.stack = LocalStack(settings)
        self.worker: subprocess.Popen | None = None
        self.log_dir = settings.stack_dir / "logs"
        self.worker_log = self.log_dir / "worker.log"
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", STREAMS_STACK_DIR=str(settings.stack_dir))
        self.run = uuid.uuid4().hex[:4]
        self.published: Counter = Counter()  # valid events published per tenant
        self.delivered: Counter = Counter()  # distinct events read back from each tenant topic
        self.bad: list[Any] = []
        self.dlq: list[Any] = []

    def __repr__(self) -> str:
        return f"_DemoRun(run={self.run!r})"

    def stop_all(self) -> None:
        """Worker, then Kafka, then Redis, each given its stop timeout (30 s, 30 s, 20 s) before it
        is killed; each step says how long it took, so a slow stop shows where."""
        worker = self.worker
        if worker is not None and worker.poll() is None:
            _say("stopping the worker ...")
            started = time.monotonic()
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                _say("  the worker did not stop within 30 s: killed")
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
            _say(f"  worker stopped in {time.monotonic() - started:.1f} s")
        _say("stopping Kafka and Redis ...")
        started = time.monotonic()
        self.stack.kafka.stop()
        _say(f"  Kafka stopped in {time.monotonic() - started:.1f} s")
        started = time.monotonic()
        self.stack.redis.stop()
        _say(f"  Redis stopped in {time.monotonic() - started:.1f} s")
        _say("all stopped; nothing left running.")

    def start_stack(self) -> None:
        """Steps 1 and 2; then notes the end offsets, so that later steps read only what this run made."""
        from streams.consumer.clean_decoder import CleanDecoder
        from streams.ops.topics import ensure_topics
        from streams.schema.registry import SchemaRegistry

        s = self.s
        _step(1, f"Starting Redis (AOF on) and Apache Kafka {s.kafka_version} in KRaft mode")
        _say(f"    data and logs under {s.stack_dir}; first run fetches Kafka's jars with Maven")
        self.stack.up()
        _say(f"    Kafka ready at {s.kafka_bootstrap}, Redis at {s.redis_url}")

        _step(2, "Declaring topics (the broker does not auto-create any)")
        for name, state in ensure_topics(s).items():
            _say(f"    {name:<24} {state}")

        self.registry = SchemaRegistry.load_dir(s.schemas_dir)
        self.decoder = CleanDecoder.from_dir(s.schemas_dir / "clean")
        self.start = {t: _end_offsets(s.kafka(), s.tenant_topic(t)) for t in DEMO_TENANTS}
        self.dlq_start = _end_offsets(s.kafka(), s.dlq_topic)

    def start_worker(self) -> None:
        from streams.cli.errors import UsageError

        _step(3, "Starting a pipeline worker (Faust): `streams worker`")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.worker_log, "ab") as log:
            self.worker = worker = subprocess.Popen([sys.executable, "-m", "streams.cli.main", "worker"],
                                                    env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                                    cwd=REPO_ROOT, start_new_session=True)
        deadline = time.monotonic() + 90
        while "Worker ready" not in self.worker_log.read_text(errors="replace"):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise UsageError(f"the worker did not start; see {self.worker_log}")
            time.sleep(0.3)
        _say(f"    worker pid {worker.pid} ready; log: {self.worker_log}; metrics (operator key): "
             f"http://127.0.0.1:{self.s.web_port}/metrics")

    def publish(self) -> None:
        from streams.ingest import samples
        from streams.ingest.producer import EventProducer

        s, run, events, published = self.s, self.run, self.events, self.published
        _step(4, f"Publishing {plural(events, 'valid event')} per tenant ({', '.join(DEMO_TENANTS)}) and one bad "
                 "event of each kind")
        producer = EventProducer(s.kafka(), s.raw_topic, self.registry)
        rng = random.Random()
        makers = [samples.signup, samples.order, samples.support]
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
        self.bad = samples.bad_records("acme", self.registry, s.max_event_bytes)
        for reason, key, value in self.bad:
            producer.send_raw(key, value)
        producer.flush()
        _say(f"    broker acknowledged {plural(producer.acked, 'record')} "
             f"({sum(published.values())} valid as Avro single-object or JSON, {len(self.bad)} bad)")
        del producer  # close its connections now, not at exit after the broker is gone

    def show_streams(self) -> None:
        s = self.s
        _step(5, "Clean tenant streams (tenant.<t>.events, Avro, decoded with schemas/clean/ only)")
        for tenant in DEMO_TENANTS:
            msgs = _read_from(s.kafka(), s.tenant_topic(tenant), self.start[tenant], self.published[tenant], 60)
            self.delivered[tenant] = len({m.key() for m in msgs if m.value() is not None})
            _say(f"    {s.tenant_topic(tenant)}: {plural(len(msgs), 'event')}")
            for m in msgs[:3]:
                name, ev = self.decoder.decode(m.value())
                subject, _, event_id = m.key().decode().partition("/")  # key: <subject>/<event id>
                _say(f"      key={subject + '/' + event_id[:8] + '…':<22} {name.rsplit('.', 1)[-1]:<15} "
                     f"{_short(ev)[:140]}")

    def show_dlq(self) -> None:
        _step(6, "Dead-letter queue (events.dlq): reason codes, no payload")
        self.dlq = _read_from(self.s.kafka(), self.s.dlq_topic, self.dlq_start, len(self.bad), 60)
        for m in self.dlq:
            d = json.loads(m.value())
            src = d["source"]
            extra = f" field={d['field']}" if d.get("field") else ""
            _say(f"    {d['reason']:<17} {src['topic']}[{src['partition']}]@{src['offset']:<6}"
                 f" fp={(d.get('payload_fingerprint') or '-')[:14]}{extra}  {d['detail']}")

    def show_store(self) -> None:
        from streams.sinks.store import StoreReader

        _step(7, "The store (Redis, per-tenant keyspace, indexed by subject and by type and time)")
        self.reader = reader = StoreReader.from_settings(self.s)
        for tenant in DEMO_TENANTS:
            _say(f"    {tenant}: {plural(reader.count(tenant), 'event')} in all; "
                 + ", ".join(f"{t}={reader.count(tenant, t)}"
                             for t in ("customer_signup", "order_placed", "support_message")))
        self.subject = subject = f"demo-{self.run}-0"
        self.docs = docs = reader.by_subject("acme", subject)
        _say(f"    `streams store acme --subject {subject}` -> {plural(len(docs), 'event')}:")
        for d in docs[:4]:
            _say(f"      {d['event_type']:<16} event_id={d['event_id']} at {d['event']['event_time']}")

    def _cli(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "streams.cli.main", *argv], env=self.env, capture_output=True,
                              text=True, timeout=120, cwd=REPO_ROOT)

    def show_privacy(self) -> None:
        """Step 8: detokenize, erase, detokenize again (refused), and the audit trail verified."""
        reader, subject, cli = self.reader, self.subject, self._cli
        _step(8, "Privacy: tokens are reversible only through audited detokenize, until erasure")
        token_doc = next((d for d in self.docs if d["event"].get("email")), None) or next(
            (d for d in reader.by_subject("acme", subject, limit=50) if d["event"].get("email")), None)
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

    def reconcile(self) -> None:
        published, delivered = sum(self.published.values()), sum(self.delivered.values())
        accounted = published + len(self.bad)
        _step(9, "Reconciliation")
        # Delivered is what was read back from the tenant topics (step 5), not what was published.
        ok = delivered == published and len(self.dlq) == len(self.bad)
        _say(f"    published {accounted} = delivered {delivered} + DLQ {len(self.dlq)}"
             f"{'  OK' if ok else '  MISMATCH (some events not read back yet)'}")
        _say("\n    Try: streams tail acme --from-beginning --max 5 | streams dlq --from-beginning --timeout 5"
             " | streams store globex --type order_placed | streams privacy report acme")


def run_demo(settings: Settings, keep_running: bool = False, events: int = 20) -> int:
    """Run the demo's steps; 0, or 130 on Ctrl-C. Whatever happens, the worker and the stack are stopped."""
    from streams.cli.errors import UsageError

    missing = [t for t in DEMO_TENANTS if t not in settings.tenants]
    if missing:
        raise UsageError(f"the demo needs tenants {', '.join(DEMO_TENANTS)} in STREAMS_TENANTS")
    demo = _DemoRun(settings, events)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    # Ctrl-C stops everything, whatever the demo inherited: a shell without job control starts a
    # background job with SIGINT ignored, and Python then installs no KeyboardInterrupt for it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        for step in (demo.start_stack, demo.start_worker, demo.publish, demo.show_streams, demo.show_dlq,
                     demo.show_store, demo.show_privacy, demo.reconcile):
            step()
        if keep_running:
            _say("\nworker and stack keep running; Ctrl-C stops everything.")
            while demo.worker is not None and demo.worker.poll() is None:
                time.sleep(1)
        return 0
    except KeyboardInterrupt:
        _say("\ninterrupted")
        return 130
    finally:
        demo.stop_all()
