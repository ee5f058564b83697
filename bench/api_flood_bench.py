"""Another tenant's API latency without and with a flood of denied calls (issue 9), measured in one run.

    python bench/api_flood_bench.py [--rounds 3] [--seconds 10] [--rate 50] [--attackers 4]
                                    [--attack-rate 870] [--port-offset N] [--no-limits]

Starts its own plain stack (.stack-bench-api, ports 17092/17379 plus --port-offset, default
$STREAMS_TEST_PORT_OFFSET) and one `streams worker` with its web server, onboards tenants a and b
(configured) with a reader key each and a few events of b. Then --rounds times, alternating (so
the machine's other load hits both phases alike):

  (1) baseline: tenant b's client calls GET /v1/tenants/b/events?limit=5 at --rate requests/s
      for --seconds on a keep-alive connection and records each latency;
  (2) flood: the same, while --attackers processes fire tenant a's key at b's URLs (keep-alive,
      loopback) at --attack-rate requests/s in all (870: the rate of the issue's finding, 13,000
      in 15 s; 0: as fast as they can), and one more process sends made-up tokens and none at
      a tenth of that.

Attackers run in their own processes, so the victim's timings do not include their GIL. Prints b's
p50/p99 in both phases and the ratio (the goal: within 2x), the attack's request rate and answers,
and how many api.denied audit records the flood added (after the last flush). --no-limits runs
the worker with the rate limits off (STREAMS_API_RATE_*=0) to show what they buy; the denial audit
stays aggregated either way.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import multiprocessing as mp
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams.api.api_keys import ApiKeyStore, Role  # noqa: E402
from streams.audit.log import read_all  # noqa: E402
from streams.ingest import samples  # noqa: E402
from streams.ingest.producer import EventProducer  # noqa: E402
from streams.ops.localstack import LocalStack  # noqa: E402
from streams.ops.topics import ensure_topics  # noqa: E402
from streams.schema.registry import SchemaRegistry  # noqa: E402
from streams.settings import Settings, to_env  # noqa: E402


def _get(conn: http.client.HTTPConnection, path: str, headers: dict[str, str]) -> int:
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    resp.read()
    return resp.status


def attacker(tag: str, port: int, paths: list[str], headers_cycle: list[dict[str, str]], until: float, rate: float,
             out: "mp.Queue") -> None:
    """``rate`` requests/s (0: as fast as one client can); (tag, answers by status) into ``out``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    counts: Counter = Counter()
    i = 0
    start = time.perf_counter()
    while time.time() < until:
        if rate:
            pause = start + i / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        try:
            counts[_get(conn, paths[i % len(paths)], headers_cycle[i % len(headers_cycle)])] += 1
        except (ConnectionError, http.client.HTTPException, OSError):
            counts["error"] += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        i += 1
    conn.close()
    out.put((tag, dict(counts)))


def victim(port: int, path: str, token: str, seconds: float, rate: float) -> tuple[list[float], Counter]:
    """Paced requests of tenant b; each one's latency in ms."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {token}"}
    lat: list[float] = []
    statuses: Counter = Counter()
    start = time.perf_counter()
    n = 0
    while time.perf_counter() - start < seconds:
        due = start + n / rate
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        t = time.perf_counter()
        statuses[_get(conn, path, headers)] += 1
        lat.append((time.perf_counter() - t) * 1000)
        n += 1
    conn.close()
    return lat, statuses


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def denied_records(s: Settings) -> list[dict]:
    return [rec for _, rec in read_all(s.kafka_bootstrap, s.audit_topic) if rec and rec["action"] == "api.denied"]


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _write_result(doc: dict) -> None:
    """bench/results/api-flood-<UTC time>.json: the figures with the commit and the command."""
    out = Path(__file__).resolve().parent / "results" / f"api-flood-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"results: {out}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    ap.add_argument("--rounds", type=int, default=3, help="baseline/flood pairs, alternating")
    ap.add_argument("--rate", type=float, default=50.0, help="tenant b's requests per second")
    ap.add_argument("--attackers", type=int, default=4, help="processes firing a's key at b's URLs")
    ap.add_argument("--attack-rate", type=float, default=870.0,
                    help="their requests/s in all (default 870, the issue's; 0: as fast as they can)")
    ap.add_argument("--port-offset", type=int, default=int(os.environ.get("STREAMS_TEST_PORT_OFFSET", "0")))
    ap.add_argument("--no-limits", action="store_true", help="run the worker with the rate limits off")
    ap.add_argument("--keep-stack", action="store_true")
    args = ap.parse_args()

    run = uuid.uuid4().hex[:6]
    stack_dir = ROOT / ".stack-bench-api"
    off = args.port_offset
    s = Settings.from_env({"STREAMS_STACK_DIR": str(stack_dir), "STREAMS_KAFKA_BOOTSTRAP": f"127.0.0.1:{17092 + off}",
                           "STREAMS_REDIS_URL": f"redis://127.0.0.1:{17379 + off}/0"})
    a, b = f"fa{run}", f"fb{run}"
    web_port = 17066 + off
    s = dataclasses.replace(s, raw_topic=f"bench.raw.{run}", dlq_topic=f"bench.dlq.{run}",
                            requests_topic=f"bench.req.{run}", audit_topic=f"bench.audit.{run}",
                            app_id=f"bench-api-{run}", tenants=frozenset({a, b}), web_enabled=True,
                            web_port=web_port, data_dir=stack_dir / f"worker-{run}", batch_within=0.01)
    if args.no_limits:
        s = dataclasses.replace(s, api_rate_per_key=0.0, api_denied_rate_per_key=0.0, api_rate_per_address=0.0)
    stack = LocalStack(s)
    print(f"starting the bench stack in {stack_dir} (ports {17092 + off}, {17379 + off}) ...", flush=True)
    stack.up()
    worker = None
    try:
        ensure_topics(s)
        keys = ApiKeyStore(__import__("redis").Redis.from_url(s.redis_url))
        _, tok_a = keys.create(a, Role.READER, "bench attacker")
        _, tok_b = keys.create(b, Role.READER, "bench victim")
        registry = SchemaRegistry.load_dir(s.schemas_dir)
        rng = random.Random(5)
        producer = EventProducer(s.kafka_bootstrap, s.raw_topic, registry)
        producer.send_many([samples.signup(b, f"u-{i}", rng) for i in range(5)])
        producer.flush()
        env = {**os.environ, **to_env(s), "STREAMS_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
        log = stack_dir / f"worker-{run}.log"
        worker = subprocess.Popen([sys.executable, "-m", "streams.cli.main", "worker", "--no-create-topics"],
                                  env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=ROOT)
        path = f"/v1/tenants/{b}/events?limit=5"
        deadline = time.monotonic() + 180
        while True:
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not come up; see {log}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", web_port, timeout=5)
                conn.request("GET", f"/v1/tenants/{b}/counts", headers={"Authorization": f"Bearer {tok_b}"})
                resp = conn.getresponse()
                body = json.loads(resp.read() or b"{}")
                conn.close()
                if resp.status == 200 and body.get("count") == 5:
                    break
            except (OSError, http.client.HTTPException, ValueError):
                pass
            time.sleep(0.5)
        victim(web_port, path, tok_b, 2.0, args.rate)  # warm-up

        before = len(denied_records(s))
        base_lat: list[float] = []
        flood_lat: list[float] = []
        base_st: Counter = Counter()
        flood_st: Counter = Counter()
        hostile_counts: Counter = Counter()
        anon_counts: Counter = Counter()
        round_ratios: list[float] = []
        ctx = mp.get_context("spawn")
        hostile = [f"/v1/tenants/{b}/events?limit=5", f"/v1/tenants/{b}/counts"]
        each = args.attack_rate / args.attackers
        flood_seconds = 0.0
        # Baseline and flood alternate, so a change in the machine's other load hits both alike.
        for rnd in range(args.rounds):
            print(f"round {rnd + 1}/{args.rounds}: (1) tenant b alone, {args.rate:.0f} req/s for {args.seconds:.0f} s; "
                  f"(2) the same during the flood ...", flush=True)
            lat, st = victim(web_port, path, tok_b, args.seconds, args.rate)
            base_lat += lat
            base_st.update(st)
            p50_base = pct(lat, 50)
            q: "mp.Queue" = ctx.Queue()
            until = time.time() + args.seconds + 1.0
            procs = [ctx.Process(target=attacker, args=("key", web_port, hostile,
                                                        [{"Authorization": f"Bearer {tok_a}"}], until, each, q))
                     for _ in range(args.attackers)]
            made_up = [{"X-API-Key": f"stk_{random.getrandbits(48):012x}_{'A' * 43}"} for _ in range(200)] + [{}]
            procs.append(ctx.Process(target=attacker, args=("anonymous", web_port, [f"/v1/tenants/{b}/counts"],
                                                             made_up, until, args.attack_rate / 10, q)))
            t0 = time.monotonic()
            for p in procs:
                p.start()
            time.sleep(0.5)  # the flood is on
            lat, st = victim(web_port, path, tok_b, args.seconds, args.rate)
            flood_lat += lat
            flood_st.update(st)
            round_ratios.append(pct(lat, 50) / p50_base)
            answers = [q.get(timeout=120) for _ in procs]
            for p in procs:
                p.join(timeout=30)
            flood_seconds += time.monotonic() - t0
            for tag, c in answers:
                (hostile_counts if tag == "key" else anon_counts).update(c)
        sent = sum(hostile_counts.values()) + sum(anon_counts.values())

        time.sleep(s.api_denial_audit_window + 3)  # the last aggregated records are flushed
        added = len(denied_records(s)) - before

        p50b, p99b, p50f, p99f = (pct(base_lat, 50), pct(base_lat, 99), pct(flood_lat, 50), pct(flood_lat, 99))
        print()
        print(f"attack rate asked: {args.attack_rate or 'as fast as possible'} req/s by {args.attackers} processes "
              f"(+{args.attack_rate / 10 if args.attack_rate else 'unpaced'} anonymous); machine: {os.cpu_count()} "
              f"cores, load {os.getloadavg()[0]:.1f}")
        print(f"limits: {'OFF' if args.no_limits else 'on'} (per key {s.api_rate_per_key}/s, denied per key "
              f"{s.api_denied_rate_per_key}/s, per address {s.api_rate_per_address}/s; audit window "
              f"{s.api_denial_audit_window} s)")
        print(f"tenant b without flood: n={len(base_lat)} p50={p50b:.2f} ms p99={p99b:.2f} ms answers={dict(base_st)}")
        print(f"tenant b during flood:  n={len(flood_lat)} p50={p50f:.2f} ms p99={p99f:.2f} ms answers={dict(flood_st)}")
        print(f"ratio flood/baseline:   p50 x{p50f / p50b:.2f}  p99 x{p99f / p99b:.2f}  "
              f"(mean {statistics.mean(base_lat):.2f} -> {statistics.mean(flood_lat):.2f} ms); p50 ratio per round: "
              + ", ".join(f"x{r:.2f}" for r in round_ratios))
        print(f"attack: {sent} requests in {flood_seconds:.0f} s ({sent / flood_seconds:.0f}/s): "
              f"a's key on b {dict(hostile_counts)}, made-up/no key {dict(anon_counts)}")
        print(f"audit: {added} api.denied records added for {sent} refused requests")
        _write_result({
            "bench": "api_flood", "command": " ".join(sys.argv), "commit": _commit(),
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cores": os.cpu_count(),
            "load": os.getloadavg()[0], "limits": not args.no_limits,
            "attack_rate": args.attack_rate, "attackers": args.attackers,
            "baseline_ms": {"p50": p50b, "p99": p99b, "n": len(base_lat)},
            "flood_ms": {"p50": p50f, "p99": p99f, "n": len(flood_lat)},
            "ratio": {"p50": p50f / p50b, "p99": p99f / p99b}, "round_p50_ratios": round_ratios,
            "refused": sent, "audit_records_added": added,
        })
        return 0
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        if not args.keep_stack:
            stack.down()


if __name__ == "__main__":
    sys.exit(main())
