"""Fairness among tenants: does one tenant sending 10x the others' volume raise their latency?

    python bench/fairness_bench.py [--rate 100] [--seconds 20]

On the real broker and Redis (its own local stack under .stack-bench-fairness on ports
17592/17879, stopped afterwards unless --keep-stack), with a `streams worker` process:

(equal)  three tenants publish to their own raw topics (``<raw>.<tenant>``, what the tenants'
         producer principals write) at RATE events/s each;
(skewed) the same, but tenant ``heavy`` publishes at 10 x RATE.

Each run has fresh topics and tenants and a fresh worker; the clock starts once a probe event of each tenant was delivered, and a warm-up of 5 s is not counted.
End-to-end latency per event = the time a reader of the tenant's topic receives the clean
event - the event's scheduled send time (carried in its event id, which the clean record's
``event-id`` header repeats; a send that falls behind its schedule counts as latency). Each
tenant topic has its own reader thread, so the heavy tenant's output does not queue in front
of the others' in the measuring side. Prints each tenant's p50/p99 in both runs and the ratios
skewed/equal for the two light tenants (the promise: a ratio of p99 at most 2), and writes
them with the machine's description to bench/results/fairness-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pipeline_bench import machine, settings_env, stop_worker  # noqa: E402
from streams.ingest import samples  # noqa: E402
from streams.ingest.producer import encode_event, event_key  # noqa: E402
from streams.devstack.stack import LocalStack  # noqa: E402
from streams.ops.topics import ensure_topics  # noqa: E402
from streams.schema.registry import SchemaRegistry  # noqa: E402
from streams.settings import Settings  # noqa: E402

RESULTS = ROOT / "bench" / "results"
WARMUP_S = 5.0
ROLES = ("heavy", "light1", "light2")


def _quantiles(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    q = statistics.quantiles(xs, n=100, method="inclusive")
    return {"samples": len(xs), "p50_ms": round(q[49], 2), "p99_ms": round(q[98], 2), "max_ms": round(xs[-1], 2)}


def start_worker(s: Settings, log: Path) -> subprocess.Popen:
    env = {**settings_env(s), "STREAMS_LOG_LEVEL": "INFO"}  # "Worker ready" is logged at INFO  # "Worker ready" is logged at INFO  # "Worker ready" is logged at INFO
    return subprocess.Popen([sys.executable, "-m", "streams.cli.main", "worker", "--no-create-topics"],
                            env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=ROOT)


def _wait_ready(w: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if w.poll() is not None:
            raise RuntimeError(f"worker exited; see {log}")
        if "Worker ready" in log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise RuntimeError(f"worker not ready; see {log}")


def run_once(base: Settings, registry: SchemaRegistry, rates: dict[str, float], seconds: float,
             log: Path) -> dict[str, dict[str, float]]:
    """One run: fresh tenants and topics, a fresh worker, the three senders on one schedule."""
    run = uuid.uuid4().hex[:6]
    names = {role: f"f{role[0]}{role[-1]}{run}" for role in ROLES}  # e.g. fhy1a2b3c, fl11a2b3c
    s = dataclasses.replace(base, raw_topic=f"fbench.raw.{run}", dlq_topic=f"fbench.dlq.{run}",
                            requests_topic=f"fbench.req.{run}", audit_topic=f"fbench.audit.{run}",
                            app_id=f"fbench-{run}", tenants=frozenset(names.values()))
    ensure_topics(s)
    tenant_of_topic = {s.tenant_topic(t): role for role, t in names.items()}

    lat: dict[str, list[float]] = {role: [] for role in ROLES}
    received = {role: 0 for role in ROLES}
    measured_from = [float("inf")]
    stop = threading.Event()
    # One reader per tenant topic, each on its own thread, reading only the event-id header (the
    # send time is in the id): one shared reader would queue the light tenants' records behind the
    # heavy one's in its own librdkafka queue, and decoding every record cost the readers (and so
    # the measured latency) most at the heavy rate.
    readers = {}
    for topic, role in tenant_of_topic.items():
        c = Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": f"fbench-lat-{run}-{role}",
                      "auto.offset.reset": "earliest", "fetch.wait.max.ms": 5, "enable.auto.commit": False})
        c.subscribe([topic])
        readers[role] = c

    def consume(role: str) -> None:
        c = readers[role]
        while not stop.is_set():
            m = c.poll(0.1)  # returns at the first record (consume(n, t) would wait t for n of them)
            if m is None or m.error():
                continue
            recv = time.time() * 1000
            event_id = dict(m.headers() or ()).get("event-id")
            if event_id is None:
                continue
            sent = (uuid.UUID(event_id.decode()).int >> 32) / 1000.0
            received[role] += 1
            if sent >= measured_from[0]:
                lat[role].append(recv - sent)

    w = start_worker(s, log)
    try:
        _wait_ready(w, log)
        threads = [threading.Thread(target=consume, args=(role,), daemon=True) for role in ROLES]
        for t in threads:
            t.start()
        # One probe event per tenant, until each is delivered: the worker's tenant raw consumer has
        # joined its group and every part is warm before the clock starts (not counted).
        p = Producer({"bootstrap.servers": s.kafka_bootstrap, "linger.ms": 1})
        for role, tenant in names.items():
            e = samples.order(tenant, "probe", event_id=str(uuid.UUID(int=int(time.time() * 1e6) << 32)))
            p.produce(s.tenant_raw_topic(tenant), encode_event(registry, e, "avro"), event_key(e))
        p.flush(30)
        deadline = time.monotonic() + 90
        while not all(received.values()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the probe events were not delivered; see {log}")
            time.sleep(0.1)
        # The schedule: every tenant's events, encoded before the clock starts, in send-time order.
        total = WARMUP_S + seconds
        t0 = time.time() + 3.0 + total * sum(rates.values()) * 0.0003
        rng = random.Random(3)
        planned: list[tuple[float, str, bytes, bytes]] = []
        for role, rate in rates.items():
            tenant = names[role]
            for i in range(int(rate * total)):
                at = t0 + i / rate
                # The scheduled send time (µs) rides in the event id, which the clean record's header repeats.
                e = samples.order(tenant, f"s{i % 200}", rng, event_time=int(at * 1000),
                                  event_id=str(uuid.UUID(int=(int(at * 1e6) << 32) | len(planned))))
                planned.append((at, s.tenant_raw_topic(tenant), event_key(e), encode_event(registry, e, "avro")))
        planned.sort(key=lambda x: x[0])
        measured_from[0] = (t0 + WARMUP_S) * 1000
        if time.time() > t0:
            raise RuntimeError("encoding the schedule took longer than its lead time")
        while time.time() < t0:
            time.sleep(0.01)
        start_wall, start_perf = time.time(), time.perf_counter()
        for at, topic, key, value in planned:
            delay = (at - start_wall) - (time.perf_counter() - start_perf)
            if delay > 0:
                time.sleep(delay)
            p.produce(topic, value, key)
            p.poll(0)
        p.flush(30)
        expected = {role: int(rates[role] * total) + 1 for role in ROLES}  # and the probe
        end = time.monotonic() + 60
        while any(received[r] < expected[r] for r in ROLES) and time.monotonic() < end:
            time.sleep(0.1)
        stop.set()
        for t in threads:
            t.join(5)
    finally:
        stop_worker(w)
        for c in readers.values():
            c.close()
    out = {}
    for role in ROLES:
        if not lat[role]:
            raise RuntimeError(f"no latency samples for {role}; see {log}")
        out[role] = {"rate": rates[role], "sent": int(rates[role] * total), "received": received[role] - 1,
                     **_quantiles(lat[role])}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=100.0, help="events/s of each light tenant (heavy: 10x)")
    ap.add_argument("--factor", type=float, default=10.0, help="the heavy tenant's rate / a light tenant's")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds per run (after a 5 s warm-up)")
    ap.add_argument("--quantum", type=int, default=0,
                    help="STREAMS_FAIR_QUANTUM of the worker (0: its default, batch size / 5)")
    ap.add_argument("--kafka-port", type=int, default=17592)
    ap.add_argument("--redis-port", type=int, default=17879)
    ap.add_argument("--keep-stack", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="do not write bench/results/")
    args = ap.parse_args()

    stack_dir = ROOT / ".stack-bench-fairness"
    s = Settings.from_env({"STREAMS_STACK_DIR": str(stack_dir),
                           "STREAMS_KAFKA_BOOTSTRAP": f"127.0.0.1:{args.kafka_port}",
                           "STREAMS_REDIS_URL": f"redis://127.0.0.1:{args.redis_port}/0"})
    s = dataclasses.replace(s, web_enabled=False, data_dir=stack_dir / "worker", fair_quantum=args.quantum)
    stack = LocalStack(s)
    print(f"starting the bench stack in {stack_dir} ...", flush=True)
    stack.up()
    logs = stack_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    try:
        import redis as redis_lib

        redis_lib.Redis.from_url(s.redis_url).flushall()
        registry = SchemaRegistry.load_dir(s.schemas_dir)
        equal_rates = {role: args.rate for role in ROLES}
        skewed_rates = {**equal_rates, "heavy": args.rate * args.factor}
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        print(f"(equal) three tenants at {args.rate:g} events/s each for {args.seconds:g}s ...", flush=True)
        equal = run_once(s, registry, equal_rates, args.seconds, logs / f"fairness-equal-{stamp}.log")
        print(f"(skewed) heavy at {args.rate * args.factor:g} events/s, the others at {args.rate:g} ...", flush=True)
        skewed = run_once(s, registry, skewed_rates, args.seconds, logs / f"fairness-skewed-{stamp}.log")
    finally:
        if not args.keep_stack:
            stack.down()

    ratios = {role: {"p50": round(skewed[role]["p50_ms"] / equal[role]["p50_ms"], 2),
                     "p99": round(skewed[role]["p99_ms"] / equal[role]["p99_ms"], 2)} for role in ROLES}
    print(f"{'tenant':8} {'run':7} {'events/s':>9} {'received':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for role in ROLES:
        for name, r in (("equal", equal), ("skewed", skewed)):
            x = r[role]
            print(f"{role:8} {name:7} {x['rate']:9g} {x['received']:9d} {x['p50_ms']:8.1f} {x['p99_ms']:8.1f}")
    for role in ROLES:
        print(f"{role}: skewed/equal p50 x{ratios[role]['p50']}, p99 x{ratios[role]['p99']}")
    worst = max(ratios[r]["p99"] for r in ("light1", "light2"))
    print(f"light tenants' worst p99 ratio: x{worst} (goal: at most x2)")
    result = {"bench": "fairness", "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "kafka_version": s.kafka_version, "batch_size": s.batch_size, "partitions": s.partitions,
              "fair_quantum": s.fair_quantum or s.batch_size // 5,
              "seconds": args.seconds, "warmup_seconds": WARMUP_S, "rate": args.rate, "factor": args.factor,
              "equal": equal, "skewed": skewed, "ratios_skewed_over_equal": ratios,
              "light_worst_p99_ratio": worst, "goal_p99_ratio": 2.0, "machine": machine()}
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"fairness-{stamp}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
