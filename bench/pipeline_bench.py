"""Throughput and latency of the pipeline against a plain confluent-kafka baseline, in one run.

    python bench/pipeline_bench.py [--events 60000] [--latency-seconds 10]

On the real broker and Redis (its own local stack under .stack-bench on
ports 17092/17379, stopped afterwards unless --keep-stack):

(a) baseline: one process, confluent-kafka consume -> decode -> validate ->
    encode -> produce, the same pure code (EventProcessor) without Faust;
    measured once without and once with the Redis store write.
(b) pipeline: a `streams worker` process (Faust) on the same preloaded input.
    Its rate is measured from its first to its last output record, so
    start-up and group join are excluded.
(c) latency: events published at half the pipeline's measured capacity;
    end-to-end latency = time a tenant-topic consumer receives the clean
    event - the event_time the producer stamped.

Prints events/s and ratios, and writes them with the machine's description
to bench/results/<UTC time>.json (key `ratio` = pipeline / baseline (a)).
Ratios, not absolute numbers, are what compare across runs on a shared machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streams.ingest import samples  # noqa: E402
from streams.ingest.processor import EventProcessor  # noqa: E402
from streams.records import Accepted, SourceRef, Validated
from streams.privacy.keys import KeyStore, LocalKeyFileProvider  # noqa: E402
from streams.privacy.transforms import SubjectCipher  # noqa: E402
from streams.ingest.producer import encode_event, event_key  # noqa: E402
from streams.devstack.stack import LocalStack  # noqa: E402
from streams.ops.topics import TopicSpec, ensure_topics  # noqa: E402
from streams.schema.registry import SchemaRegistry  # noqa: E402
from streams.settings import Settings, to_env  # noqa: E402
from streams.sinks.store import WRITE_EVENTS_LUA, write_calls  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def machine() -> dict[str, object]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "cpu_model": cpu, "mem_mib": mem}


def preload(s: Settings, registry: SchemaRegistry, topic: str, n: int, tenants: list[str]) -> None:
    p = Producer({"bootstrap.servers": s.kafka_bootstrap, "linger.ms": 20, "batch.num.messages": 10000,
                  "compression.type": "lz4", "queue.buffering.max.messages": 500000})
    # Encode a pool once, then vary event ids cheaply: the bench measures the consumer side.
    pool = [(event_key(e), e) for e in samples.stream(tenants, 2000, seed=11)]
    for i in range(n):
        key, e = pool[i % len(pool)]
        e = dict(e, event_id=str(uuid.UUID(int=i + 1, version=4)))
        while True:
            try:
                p.produce(topic, encode_event(registry, e, "avro"), key)
                break
            except BufferError:
                p.poll(0.1)
        if i % 10000 == 0:
            p.poll(0)
    assert p.flush(60) == 0


def baseline(s: Settings, registry: SchemaRegistry, topic: str, n: int, with_store: bool) -> float:
    import redis

    proc = EventProcessor(registry, s.tenants, s.max_event_bytes)
    c = Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": f"bench-base-{uuid.uuid4().hex[:6]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    p = Producer({"bootstrap.servers": s.kafka_bootstrap, "enable.idempotence": True, "linger.ms": 2,
                  "compression.type": "lz4", "queue.buffering.max.messages": 200000})
    r = redis.Redis.from_url(s.redis_url)
    keystore = KeyStore(r, LocalKeyFileProvider(s.master_key_file))
    c.subscribe([topic])
    done = 0
    t0 = None
    while done < n:
        msgs = c.consume(500, 1.0)
        if not msgs:
            continue
        if t0 is None:
            t0 = time.perf_counter()
        now_ms = int(time.time() * 1000)
        accepted = []
        # The same privacy work as the worker: validate, one key fetch per tenant, transform.
        validated = [proc.validate(m.key(), m.value(), SourceRef(m.topic(), m.partition(), m.offset()))
                     for m in msgs if not m.error()]
        wanted: dict[str, set[str]] = {}
        for v in validated:
            if isinstance(v, Validated):
                wanted.setdefault(v.tenant, set()).add(v.subject)
        ciphers = {(t, subj): SubjectCipher(k) for t, subjects in wanted.items()
                   for subj, k in keystore.subject_keys(t, subjects).items()}
        for v in validated:
            o = proc.finish(v, ciphers[(v.tenant, v.subject)], now_ms) if isinstance(v, Validated) else v
            if isinstance(o, Accepted):
                accepted.append(o)
                while True:
                    try:
                        p.produce(s.tenant_topic(o.tenant), o.value, o.key)
                        break
                    except BufferError:
                        p.poll(0.05)
            done += 1
        p.flush(30)
        if with_store and accepted:
            # The same store write as the worker's (one script call per tenant), synchronously.
            pipe = r.pipeline(transaction=False)
            for keys, argv, _ in write_calls(accepted).values():
                pipe.eval(WRITE_EVENTS_LUA, len(keys), *keys, *argv)
            pipe.execute()
        c.commit(asynchronous=True)
    elapsed = time.perf_counter() - (t0 or time.perf_counter())
    c.close()
    return n / elapsed


def _out_count(c: Consumer, topics: list[str]) -> int:
    total = 0
    for t in topics:
        md = c.list_topics(t, timeout=10)
        for p in md.topics[t].partitions:
            total += c.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
    return total


def settings_env(s: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(to_env(s))
    env["STREAMS_LOG_LEVEL"] = "WARNING"; env["PYTHONUNBUFFERED"]="1"
    return env


def start_worker(s: Settings, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "streams.cli.main", "worker", "--no-create-topics"],
                            env=settings_env(s), stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=ROOT)


def stop_worker(w: subprocess.Popen) -> None:
    w.terminate()
    try:
        w.wait(30)
    except subprocess.TimeoutExpired:
        w.kill()
        w.wait()


def pipeline_rate(s: Settings, n: int, log: Path) -> float:
    """Worker on a preloaded topic; rate from first to last output record (start-up excluded)."""
    topics = [s.tenant_topic(t) for t in sorted(s.tenants)]
    probe = Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": "bench-probe"})
    base = _out_count(probe, topics)
    w = start_worker(s, log)
    try:
        t_first = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if w.poll() is not None:
                raise RuntimeError(f"worker exited; see {log}")
            got = _out_count(probe, topics) - base
            now = time.perf_counter()
            if got > 0 and t_first is None:
                t_first, first_count = now, got
            if got >= n:
                # Rate over the records produced after the first observation.
                return (got - first_count) / (now - t_first)
            time.sleep(0.05)
        raise RuntimeError("pipeline did not finish in time")
    finally:
        stop_worker(w)
        probe.close()


def latency(s: Settings, registry: SchemaRegistry, rate: float, seconds: float, log: Path) -> dict[str, float]:
    tenants = sorted(s.tenants)
    w = start_worker(s, log)
    lat: list[float] = []
    stop = threading.Event()
    c = Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": f"bench-lat-{uuid.uuid4().hex[:6]}",
                  "auto.offset.reset": "latest", "fetch.wait.max.ms": 5})
    c.subscribe([s.tenant_topic(t) for t in tenants])
    from streams.schema import codec

    clean = SchemaRegistry.load_dir(s.schemas_dir / "clean")

    def consume() -> None:
        while not stop.is_set():
            m = c.poll(0.1)
            if m is None or m.error():
                continue
            recv = time.time() * 1000
            _, ev = codec.decode(clean, m.value())
            sent = ev["event_time"].timestamp() * 1000
            lat.append(recv - sent)

    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # wait for the worker's group join (first output)
            if w.poll() is not None:
                raise RuntimeError(f"worker exited; see {log}")
            if "Worker ready" in log.read_text(errors="replace") or "ready" in log.read_text(errors="replace").lower():
                break
            time.sleep(0.2)
        time.sleep(3)
        c.poll(1.0)  # join the reader's group before sending
        t = threading.Thread(target=consume, daemon=True)
        t.start()
        p = Producer({"bootstrap.servers": s.kafka_bootstrap, "linger.ms": 0})
        rng = random.Random(5)
        interval = 1.0 / rate
        n = int(rate * seconds)
        # Events are made and encoded before the clock starts, each stamped with the time it is
        # scheduled to be sent: generating them on the fly took a good part of a core, which on this
        # 2-core machine the worker then lacked (the "half capacity" rate was not half any more).
        # A send that falls behind its schedule counts as latency (conservative).
        t0 = time.time() + max(5.0, n * 0.0004)
        planned = []
        for i in range(n):
            e = samples.order(rng.choice(tenants), f"lat{i % 100}", rng, event_time=int((t0 + i * interval) * 1000))
            planned.append((event_key(e), encode_event(registry, e, "avro")))
        while time.time() < t0:
            time.sleep(0.01)
        start = time.perf_counter()
        for i, (key, value) in enumerate(planned):
            target = start + i * interval
            delay = target - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            p.produce(s.raw_topic, value, key)
            p.poll(0)
        p.flush(30)
        end = time.monotonic() + 15
        while len(lat) < n and time.monotonic() < end:
            time.sleep(0.1)
        stop.set()
        t.join(5)
    finally:
        stop_worker(w)
        c.close()
    if not lat:
        raise RuntimeError("no latency samples")
    lat.sort()
    q = statistics.quantiles(lat, n=100, method="inclusive")
    return {"rate": rate, "samples": len(lat), "sent": int(rate * seconds), "p50_ms": round(q[49], 2),
            "p99_ms": round(q[98], 2), "max_ms": round(lat[-1], 2)}


def erasure_latency(s: Settings, registry: SchemaRegistry, rate: float, count: int, log: Path) -> dict[str, float]:
    """Erasures filed one by one while events flow at ``rate``; filed -> receipt's last step, per request."""
    import redis as redis_lib

    from streams.consent.requests import new_request
    from streams.consent.store import ConsentStore

    tenants = sorted(s.tenants)
    w = start_worker(s, log)
    stop = threading.Event()
    p = Producer({"bootstrap.servers": s.kafka_bootstrap, "linger.ms": 2, "partitioner": "murmur2_random"})
    rp = Producer({"bootstrap.servers": s.kafka_bootstrap, "partitioner": "murmur2_random"})

    def load() -> None:
        rng = random.Random(9)
        interval, i = 1.0 / rate, 0
        start = time.perf_counter()
        while not stop.is_set():
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            e = samples.order(rng.choice(tenants), f"load{i % 500}", rng)
            p.produce(s.raw_topic, encode_event(registry, e, "avro"), event_key(e))
            p.poll(0)
            i += 1

    store = ConsentStore(redis_lib.Redis.from_url(s.redis_url))
    took: list[float] = []
    try:
        deadline = time.monotonic() + 90
        while "Worker ready" not in log.read_text(errors="replace") and time.monotonic() < deadline:
            time.sleep(0.2)
        t = threading.Thread(target=load, daemon=True)
        t.start()
        time.sleep(2)
        for i in range(count):
            req = new_request("erase", tenants[i % 2], f"load{i}", "bench")
            rp.produce(s.requests_topic, req.to_json(), req.key)
            rp.flush(10)
            end = time.monotonic() + 30
            while time.monotonic() < end:
                receipt = store.receipt(req.tenant, req.request_id)
                if receipt and receipt.get("status") == "done":
                    took.append(receipt["completed_at_ms"] - req.filed_at_ms)
                    break
                time.sleep(0.01)
            time.sleep(0.1)
    finally:
        stop.set()
        stop_worker(w)
        p.flush(10)
    if not took:
        raise RuntimeError("no erasure completed")
    took.sort()
    q = statistics.quantiles(took, n=100, method="inclusive") if len(took) > 1 else [took[0]] * 99
    return {"rate": rate, "erasures": len(took), "filed": count, "p50_ms": round(q[49], 1), "p99_ms": round(q[98], 1),
            "max_ms": round(took[-1], 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=60000, help="events for the throughput runs")
    ap.add_argument("--latency-seconds", type=float, default=10.0)
    ap.add_argument("--erasures", type=int, default=40, help="erasures for the erasure latency run")
    ap.add_argument("--keep-stack", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="do not write bench/results/")
    args = ap.parse_args()

    run = uuid.uuid4().hex[:6]
    stack_dir = ROOT / ".stack-bench"
    base_env = {"STREAMS_STACK_DIR": str(stack_dir), "STREAMS_KAFKA_BOOTSTRAP": "127.0.0.1:17092",
                "STREAMS_REDIS_URL": "redis://127.0.0.1:17379/0"}
    s = Settings.from_env(base_env)
    s = dataclasses.replace(s, raw_topic=f"bench.raw.{run}", dlq_topic=f"bench.dlq.{run}",
                            requests_topic=f"bench.req.{run}", audit_topic=f"bench.audit.{run}",
                            app_id=f"bench-{run}", tenants=frozenset({f"ba{run}", f"bb{run}"}),
                            web_enabled=False, data_dir=stack_dir / "worker")
    stack = LocalStack(s)
    print(f"starting the bench stack in {stack_dir} ...", flush=True)
    stack.up()
    try:
        import redis as redis_lib

        # The bench stack is the bench's own: start from an empty store, so store size (and the
        # erasure's AOF rewrite) is what this run wrote, not what earlier runs left.
        redis_lib.Redis.from_url(s.redis_url).flushall()
        ensure_topics(s)
        registry = SchemaRegistry.load_dir(s.schemas_dir)
        tenants = sorted(s.tenants)
        print(f"preloading {args.events} Avro events ...", flush=True)
        preload(s, registry, s.raw_topic, args.events, tenants)

        print("(a) baseline: plain confluent-kafka loop ...", flush=True)
        base = baseline(s, registry, s.raw_topic, args.events, with_store=False)
        print(f"    {base:,.0f} events/s")
        print("(a') baseline with the Redis store write ...", flush=True)
        base_store = baseline(s, registry, s.raw_topic, args.events, with_store=True)
        print(f"    {base_store:,.0f} events/s")

        print("(b) pipeline: `streams worker` (Faust) ...", flush=True)
        logs = stack_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        pipe = pipeline_rate(s, args.events, logs / f"bench-worker-{run}.log")
        print(f"    {pipe:,.0f} events/s")

        rate = max(50.0, pipe / 2)
        print(f"(c) latency at {rate:,.0f} events/s (half the pipeline's capacity) for {args.latency_seconds:.0f}s ...",
              flush=True)
        s_lat = dataclasses.replace(s, raw_topic=f"bench.lat.{run}", app_id=f"bench-lat-{run}")
        ensure_topics(s_lat, [TopicSpec(s_lat.raw_topic, s_lat.partitions, {})])
        lat = latency(s_lat, registry, rate, args.latency_seconds, logs / f"bench-latency-{run}.log")
        print(f"    p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms over {lat['samples']} events")

        print(f"(d) erasure latency: {args.erasures} erasures while events flow at {rate:,.0f}/s ...", flush=True)
        s_er = dataclasses.replace(s, raw_topic=f"bench.er.{run}", app_id=f"bench-er-{run}",
                                   requests_topic=f"bench.req.er.{run}")
        ensure_topics(s_er, [TopicSpec(s_er.raw_topic, s_er.partitions, {}),
                             TopicSpec(s_er.requests_topic, s_er.partitions, {})])
        erasure = erasure_latency(s_er, registry, rate, args.erasures, logs / f"bench-erasure-{run}.log")
        print(f"    p50 {erasure['p50_ms']} ms, p99 {erasure['p99_ms']} ms over {erasure['erasures']} erasures")

        result = {
            "bench": "pipeline",
            "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(),
            "kafka_version": s.kafka_version,
            "events": args.events,
            "batch_size": s.batch_size,
            "partitions": s.partitions,
            "baseline_events_per_s": round(base),
            "baseline_with_store_events_per_s": round(base_store),
            "pipeline_events_per_s": round(pipe),
            "ratio": round(pipe / base, 3),
            "ratio_vs_baseline_with_store": round(pipe / base_store, 3),
            "latency": lat,
            "erasure_latency": erasure,
            "store_keys_at_end": int(__import__("redis").Redis.from_url(s.redis_url).dbsize()),
            "transform": "full privacy policy (tokenize/hash/mask/redact/generalize, keys from Redis) in both",
            "goals": {"ratio": 0.5, "p99_ms": 50, "erasure_p99_ms": 1000},
        }
        print(f"\nratio pipeline/baseline = {result['ratio']}  (vs baseline with store: "
              f"{result['ratio_vs_baseline_with_store']});  latency p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms")
        if not args.no_write:
            RESULTS.mkdir(parents=True, exist_ok=True)
            out = RESULTS / f"pipeline-{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.json"
            out.write_text(json.dumps(result, indent=2) + "\n")
            print(f"wrote {out}")
        return 0
    finally:
        if not args.keep_stack:
            stack.down()


if __name__ == "__main__":
    sys.exit(main())
