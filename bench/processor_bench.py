"""Per-event CPU of the pure processing path (``EventProcessor.validate`` + ``finish``), no I/O.

    python bench/processor_bench.py [--events 4000] [--repeat 5] [--compare DIR ...] [--rounds 3]

Measures what the worker pays per event in the project's own code before any
Kafka or Redis work: decode the Avro single-object record, validate it, apply
the privacy policy with a subject cipher, encode the clean event. Ciphers are
built once per subject outside the timed loop (the worker builds them once per
subject and batch), so the figure is the per-event cost alone.

``--compare DIR`` runs the same bench on another source tree (e.g. an earlier
commit unpacked with ``git archive <commit> | tar -x -C DIR``) in a subprocess,
alternating with this tree ``--rounds`` times, so before/after figures come from
one run on the same (shared) machine. Prints µs/event and events/s per tree
(median and spread of the rounds) and, with ``--json``, one JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def measure(root: Path, events: int, repeat: int) -> dict[str, float]:
    """Best-of-``repeat`` µs/event of validate+finish over ``events`` sample events, in this process."""
    sys.path.insert(0, str(root))
    from streams.ingest import samples
    from streams.ingest.processor import Accepted, EventProcessor, SourceRef, Validated
    from streams.ingest.producer import encode_event, event_key
    from streams.privacy.transforms import SubjectCipher
    from streams.schema.registry import SchemaRegistry

    registry = SchemaRegistry.load_dir(root / "schemas")
    tenants = ["ta", "tb"]
    evs = list(samples.stream(tenants, events, seed=11))
    records = [(event_key(e), encode_event(registry, e, "avro")) for e in evs]
    proc = EventProcessor(registry, tenants, 1_000_000)
    ciphers = {(e["tenant_id"], e["subject_id"]): SubjectCipher(hashlib.sha256(e["subject_id"].encode()).digest() * 2)
               for e in evs}

    def once() -> float:
        t0 = time.process_time()
        for i, (key, value) in enumerate(records):
            v = proc.validate(key, value, SourceRef("events.raw", 0, i))
            assert isinstance(v, Validated)
            a = proc.finish(v, ciphers[(v.tenant, v.subject)], 1_700_000_000_000)
            assert isinstance(a, Accepted)
        return time.process_time() - t0

    once()  # warm-up
    runs = [once() for _ in range(repeat)]
    us = min(runs) / events * 1e6
    return {"us_per_event": round(us, 2), "events_per_s": round(1e6 / us)}


def _child(root: Path, events: int, repeat: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--root", str(root), "--events", str(events),
                          "--repeat", str(repeat), "--json"], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=str(root)), cwd=str(root))
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=4000)
    ap.add_argument("--repeat", type=int, default=5, help="timed passes per measurement (best is kept)")
    ap.add_argument("--root", type=Path, default=HERE, help=argparse.SUPPRESS)
    ap.add_argument("--compare", type=Path, action="append", default=[],
                    help="another source tree to measure in the same run (alternating)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not args.compare:
        r = measure(args.root, args.events, args.repeat)
        print(json.dumps(r) if args.json else f"{r['us_per_event']} µs/event, {r['events_per_s']:,} events/s")
        return 0
    trees = [args.root] + args.compare
    got: dict[Path, list[float]] = {t: [] for t in trees}
    for _ in range(args.rounds):
        for t in trees:
            got[t].append(_child(t, args.events, args.repeat)["us_per_event"])
    summary = {}
    for t, us in got.items():
        med = statistics.median(us)
        summary[str(t)] = {"us_per_event_median": med, "us_per_event_min": min(us), "us_per_event_max": max(us),
                           "events_per_s_median": round(1e6 / med)}
        print(f"{t}: {med:.1f} µs/event (min {min(us):.1f}, max {max(us):.1f}), {1e6 / med:,.0f} events/s")
    base = statistics.median(got[args.root])
    for t in args.compare:
        print(f"{args.root.name} / {t.name} = {base / statistics.median(got[t]):.3f} of the CPU per event")
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
