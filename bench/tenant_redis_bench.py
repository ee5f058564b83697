"""The pipeline's Redis latency while a tenant hammers its heaviest allowed Redis command (issue 9), in one run.

    python bench/tenant_redis_bench.py [--rounds 2] [--seconds 6] [--entries 200000] [--hammers 2]
                                       [--allowlist current|previous] [--port-offset N]

Issue 9: "Tenants read from Redis without touching the pipeline's latency ... the pipeline's Redis
p99 stays under 50 ms". A tenant's Redis user may run the commands of its ACL (``redis_acl_rules``,
the allowlist ``TENANT_REDIS_COMMANDS``) on its own keys ``t:{<t>}:*``. The store puts no bound on
a tenant's indexes: the time index holds every event the tenant has stored (until erasure or
deletion), so at 1,000 events/s a tenant has 200,000 entries within minutes. --entries sets that
size (the time index, and as many ~300-byte event documents).

Starts its own Redis (LocalRedis, the project's stack helper; .stack-bench-redis, port 17479 plus
--port-offset, default $STREAMS_TEST_PORT_OFFSET) with ACLs on (a pipeline user with every right,
the default user off, AOF on as in production), fills tenant ``hot``'s keyspace, and makes its
Redis user with the project's rules: the allowlist of this commit (``--allowlist current``) or
the one before bounded commands only (``--allowlist previous``, to show what it allowed).

Then --rounds times, alternating: (1) baseline: the pipeline's calls alone; (2) for each candidate
command, the same while --hammers processes run it in a loop as tenant ``hot`` (a command the ACL
refuses is reported as refused and not hammered). The pipeline's calls are what the worker does on
the shared Redis, with its own credentials: the store write (``WRITE_EVENTS_LUA``, a batch of 10
events of another tenant) and a GET of a consent state key, alternating, 100 calls/s; each call's
latency is recorded. Prints p50/p99 per phase and the ratio to the baseline of the same run, and
writes them to bench/results/tenant-redis-<time>.json.

Fairness: the hammering clients are lean (raw sockets; a reply is read as the byte count its first
answer had, not parsed: the data does not change during the bench) and run at nice 19, so what the
pipeline waits for is Redis' own work, not the tenant client's CPU on the shared 2 cores.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from streams.consent.store import consent_key  # noqa: E402
from streams.devstack.stack import LocalRedis  # noqa: E402
from streams.sinks import store_keys as K  # noqa: E402
from streams.sinks.store import WRITE_EVENTS_LUA  # noqa: E402
from streams.tenancy.onboarding import TENANT_REDIS_COMMANDS, redis_acl_rules  # noqa: E402
from streams.tenancy.registry import deleted_marker  # noqa: E402
from streams.settings import Settings  # noqa: E402

# The allowlist before issue 9's bounded-commands change (commit c011784), to measure what it let a tenant do.
PREVIOUS_COMMANDS = (
    "get", "mget", "strlen", "exists", "type", "ttl", "pttl",
    "zrange", "zrangebyscore", "zrevrange", "zrevrangebyscore", "zcard", "zcount", "zscore", "zmscore",
    "zrank", "zrevrank", "ping",
)
TENANT = "hot"
DOC = json.dumps({"event_type": "page_view", "tenant": TENANT, "schema": "streams.PageView",
                  "event": {"page": "/" + "x" * 120, "subject_id": "s" * 16, "token": "t" * 64}})  # ~300 bytes
VARIADIC = 50_000  # keys or members of one MGET / EXISTS / ZMSCORE


def event_id(i: int) -> str:
    """As long as the store's ids (str(UUID), 36 characters): index answers are as large as real ones."""
    return f"{i:08x}-0000-4000-8000-000000000000"


def resp(*args: str | bytes) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def candidates(entries: int) -> dict[str, tuple[bytes, int]]:
    """The tenant's heaviest commands on its own keys: the bytes one call sends, and how many commands that is."""
    idx = K.time_index(TENANT)
    ids = [event_id(i) for i in range(min(entries, VARIADIC))]
    docs = [K.event_key(TENANT, i) for i in ids]
    return {
        "ZRANGE time 0 -1": (resp("ZRANGE", idx, "0", "-1"), 1),
        "ZRANGEBYSCORE time -inf +inf": (resp("ZRANGEBYSCORE", idx, "-inf", "+inf"), 1),
        f"MGET {len(docs)} documents": (resp("MGET", *docs), 1),
        f"EXISTS {len(docs)} keys": (resp("EXISTS", *docs), 1),
        f"ZMSCORE time {len(ids)} members": (resp("ZMSCORE", idx, *ids), 1),
        "GET x1000 pipelined": (b"".join(resp("GET", d) for d in docs[:1000]), 1000),
        "ZCOUNT time -inf +inf x1000 pipelined": (resp("ZCOUNT", idx, "-inf", "+inf") * 1000, 1000),
    }


def _auth(sock: socket.socket, user: str, password: str) -> None:
    sock.sendall(resp("AUTH", user, password))
    if not sock.recv(64).startswith(b"+OK"):
        raise RuntimeError("tenant user could not log in")


def probe(port: int, user: str, password: str, request: bytes, n: int) -> tuple[bool, int]:
    """(allowed, bytes of the full answer). Reads with redis-py's parser once, to learn the answer's size."""
    r = redis.Redis(port=port, username=user, password=password, socket_timeout=120)
    conn = r.connection_pool.get_connection()
    try:
        conn.send_packed_command([request])
        for _ in range(n):
            try:
                conn.read_response()
            except redis.exceptions.NoPermissionError:
                return False, 0
    finally:
        r.connection_pool.release(conn)
        r.close()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:  # the size, in raw bytes
        _auth(s, user, password)
        s.sendall(request)
        size = 0
        s.settimeout(2.0)
        try:
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                size += len(chunk)
        except socket.timeout:
            pass
    return True, size


def hammer(port: int, user: str, password: str, request: bytes, size: int, ready: Any, go: Any, stop: Any,
           out: "mp.Queue") -> None:
    """Send ``request`` and read its ``size``-byte answer, again and again until ``stop``; (calls, CPU s)."""
    os.nice(19)
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    s = socket.create_connection(("127.0.0.1", port), timeout=120)
    _auth(s, user, password)
    ready.put(1)
    go.wait()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    calls = 0
    while not stop.is_set():
        s.sendall(request)
        left = size
        while left:
            n = s.recv_into(view, min(left, len(buf)))
            if not n:
                raise ConnectionError("closed")
            left -= n
        calls += 1
    ru = resource.getrusage(resource.RUSAGE_SELF)
    s.close()
    out.put((calls, ru.ru_utime + ru.ru_stime - ru0.ru_utime - ru0.ru_stime))


def pipeline_calls(r: redis.Redis, seconds: float, rate: float) -> dict[str, list[float]]:
    """The worker's calls on the shared Redis, with its credentials, paced; latencies in ms by kind."""
    tenant = "pipe"
    lat: dict[str, list[float]] = {"write": [], "consent_get": []}
    ckey = consent_key(tenant, "p" * 43)
    start = time.perf_counter()
    i = 0
    while time.perf_counter() - start < seconds:
        pause = start + i / rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        t = time.perf_counter()
        if i % 2 == 0:
            keys, argv = [deleted_marker(tenant)], []
            for j in range(10):
                eid = f"w{i:08d}{j}"
                keys += [K.event_key(tenant, eid), K.subject_index(tenant, f"s{j}"),
                         K.type_index(tenant, "page_view"), K.time_index(tenant)]
                argv += [eid, str(1_700_000_000_000 + i), DOC]
            r.eval(WRITE_EVENTS_LUA, len(keys), *keys, *argv)
            lat["write"].append((time.perf_counter() - t) * 1000)
        else:
            r.get(ckey)
            lat["consent_get"].append((time.perf_counter() - t) * 1000)
        i += 1
    return lat


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def fill(r: redis.Redis, entries: int) -> None:
    idx = K.time_index(TENANT)
    for lo in range(0, entries, 5000):
        p = r.pipeline(transaction=False)
        ids = [event_id(i) for i in range(lo, min(entries, lo + 5000))]
        p.zadd(idx, {e: 1_700_000_000_000 + lo + n for n, e in enumerate(ids)})
        for e in ids:
            p.set(K.event_key(TENANT, e), DOC)
        p.execute()


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=6.0, help="length of each phase")
    ap.add_argument("--entries", type=int, default=200_000, help="the tenant's index size (and documents)")
    ap.add_argument("--hammers", type=int, default=2, help="tenant processes running the command")
    ap.add_argument("--rate", type=float, default=100.0, help="the pipeline's calls per second")
    ap.add_argument("--allowlist", choices=("current", "previous"), default="current")
    ap.add_argument("--port-offset", type=int, default=int(os.environ.get("STREAMS_TEST_PORT_OFFSET", "0")))
    args = ap.parse_args()

    stack_dir = ROOT / ".stack-bench-redis"
    port = 17479 + args.port_offset
    admin_pw = secrets.token_urlsafe(16)
    s = Settings.from_env({"STREAMS_STACK_DIR": str(stack_dir),
                           "STREAMS_REDIS_URL": f"redis://streams:{admin_pw}@127.0.0.1:{port}/0"})
    stack_redis = LocalRedis(s)
    print(f"starting the bench Redis in {stack_dir} (port {port}) ...", flush=True)
    stack_redis.start()
    try:
        r = redis.Redis.from_url(s.redis_url, socket_timeout=120)
        r.flushall()
        t0 = time.monotonic()
        fill(r, args.entries)
        print(f"filled tenant {TENANT}: {args.entries} index entries and documents in {time.monotonic() - t0:.0f} s",
              flush=True)
        commands = TENANT_REDIS_COMMANDS if args.allowlist == "current" else PREVIOUS_COMMANDS
        rules = redis_acl_rules(TENANT)
        rules = [x for x in rules if not x.startswith("+")] + [f"+{c}" for c in commands]
        user, pw = f"tenant-{TENANT}", secrets.token_urlsafe(16)
        r.execute_command("ACL", "SETUSER", user, "reset", f">{pw}", *rules)

        cands = candidates(args.entries)
        allowed: dict[str, tuple[bytes, int]] = {}
        refused: list[str] = []
        for name, (req, n) in cands.items():
            ok, size = probe(port, user, pw, req, n)
            if ok:
                allowed[name] = (req, size)
            else:
                refused.append(name)
        print(f"allowlist {args.allowlist}: {', '.join(commands)}")
        print(f"refused by the ACL (NOPERM): {', '.join(refused) or 'none'}")
        for name, (_, size) in allowed.items():
            print(f"allowed: {name} (answer {size / 1e6:.2f} MB)")

        pipe = redis.Redis.from_url(s.redis_url, socket_timeout=30)
        pipeline_calls(pipe, 1.0, args.rate)  # warm-up
        ctx = mp.get_context("fork")  # fast to start: the hammers only need a socket
        phases: dict[str, dict[str, list[float]]] = {"baseline": {"write": [], "consent_get": []}}
        hammer_stats: dict[str, dict[str, float]] = {}
        for name in allowed:
            phases[name] = {"write": [], "consent_get": []}
            hammer_stats[name] = {"calls": 0, "cpu": 0.0, "seconds": 0.0}
        for rnd in range(args.rounds):
            print(f"round {rnd + 1}/{args.rounds} ...", flush=True)
            for name in phases:
                procs: list[Any] = []
                if name != "baseline":
                    req, size = allowed[name]
                    ready, out = ctx.Queue(), ctx.Queue()
                    go, stop = ctx.Event(), ctx.Event()
                    procs = [ctx.Process(target=hammer, args=(port, user, pw, req, size, ready, go, stop, out))
                             for _ in range(args.hammers)]
                    for p in procs:
                        p.start()
                    for _ in procs:
                        ready.get(timeout=120)
                    go.set()
                    time.sleep(0.3)
                lat = pipeline_calls(pipe, args.seconds, args.rate)
                for k, v in lat.items():
                    phases[name][k] += v
                if procs:
                    stop.set()
                    for _ in procs:
                        calls, cpu = out.get(timeout=300)
                        hammer_stats[name]["calls"] += calls
                        hammer_stats[name]["cpu"] += cpu
                    hammer_stats[name]["seconds"] += args.seconds + 0.3
                    for p in procs:
                        p.join(timeout=60)

        def summary(lat: dict[str, list[float]]) -> dict[str, float]:
            both = lat["write"] + lat["consent_get"]
            return {"p50": pct(both, 50), "p99": pct(both, 99), "max": max(both), "n": len(both),
                    "write_p99": pct(lat["write"], 99), "consent_get_p99": pct(lat["consent_get"], 99)}

        base = summary(phases["baseline"])
        result: dict[str, Any] = {}
        print()
        print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; tenant index {args.entries} entries; "
              f"{args.hammers} hammering processes (nice 19); pipeline {args.rate:.0f} calls/s (write Lua, consent GET)")
        print(f"{'phase':42} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'x p50':>6} {'x p99':>6}  tenant calls/s")
        for name, lat in phases.items():
            sm = summary(lat)
            st = hammer_stats.get(name)
            rate = f"{st['calls'] / st['seconds']:.1f} (cpu {st['cpu'] / st['seconds']:.2f} cores)" if st else ""
            sm.update({"ratio_p50": sm["p50"] / base["p50"], "ratio_p99": sm["p99"] / base["p99"]})
            if st:
                sm.update({"tenant_calls_per_s": st["calls"] / st["seconds"],
                           "tenant_cpu_cores": st["cpu"] / st["seconds"], "answer_bytes": allowed[name][1]})
            result[name] = sm
            flag = "  OVER 50 ms" if sm["p99"] > 50 else ""
            print(f"{name:42} {sm['p50']:8.2f} {sm['p99']:8.2f} {sm['max']:8.1f} {sm['ratio_p50']:6.2f} "
                  f"{sm['ratio_p99']:6.2f}  {rate}{flag}")
        doc = {"bench": "tenant_redis", "command": " ".join(sys.argv), "commit": _commit(),
               "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cores": os.cpu_count(),
               "load": os.getloadavg()[0], "allowlist": args.allowlist, "allowed_commands": list(commands),
               "entries": args.entries, "hammers": args.hammers, "refused": refused, "phases": result}
        out_path = ROOT / "bench" / "results" / f"tenant-redis-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
        out_path.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"results: {out_path}")
        worst = max((v["p99"] for k, v in result.items() if k != "baseline"), default=base["p99"])
        print(f"the pipeline's worst p99 under a tenant's allowed commands: {worst:.1f} ms "
              f"({'under' if worst <= 50 else 'OVER'} the 50 ms goal)")
        return 0
    finally:
        stack_redis.stop()


if __name__ == "__main__":
    sys.exit(main())
