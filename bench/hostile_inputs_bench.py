"""How long the decoder and validator take to judge hostile input (the speed claim the unit tests no longer assert).

    python bench/hostile_inputs_bench.py [--budget 1.0] [--corruptions 300]

The unit tests (tests/unit/test_codec.py, test_fuzz_decoder.py, test_processor.py) check what
happens to truncated, corrupted, huge-length and deeply nested input, and bound its memory;
they do not time it, because on a shared 2-core runner a time limit measures the machine.
This script times the same kinds of input on whatever machine runs it, pure code only (no
broker, no Redis): every truncation and 300 random corruptions of each sample event through
``codec.decode``; huge declared lengths at every position and a 50,000-deep JSON document
through ``EventProcessor.validate`` + ``finish``, as the worker calls them.

Prints count, median, p99 and max seconds per record for each kind, and exits 1 when the slowest
record of any kind takes more than ``--budget`` seconds (the claim: well under 1 s per record).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from streams.ingest import samples  # noqa: E402
from streams.ingest.processor import EventProcessor  # noqa: E402
from streams.records import Rejected, SourceRef
from streams.ingest.producer import encode_event  # noqa: E402
from streams.privacy.transforms import SubjectCipher  # noqa: E402
from streams.schema import codec  # noqa: E402
from streams.schema.exceptions import DecodeError, UnknownSchemaError  # noqa: E402
from streams.schema.registry import SchemaRegistry  # noqa: E402
from streams.settings import Settings  # noqa: E402

MAKERS = [samples.signup, samples.order, samples.support]
HUGE = [b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f", b"\xff\xff\xff\xff\xff\xff\xff\xff\x7f", b"\x80\x80\x80\x80\x08",
        b"\x01", b"\x03"]  # ~2**62, -2**62, 2**31, -1, -2 as Avro longs
SRC = SourceRef(topic="events.raw", partition=0, offset=0, timestamp_ms=1_700_000_000_000)


def timed(cases: Iterable[bytes], fn: Callable[[bytes], object]) -> list[float]:
    out = []
    for value in cases:
        t = time.perf_counter()
        fn(value)
        out.append(time.perf_counter() - t)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=1.0, help="seconds a single record may take (default 1.0)")
    ap.add_argument("--corruptions", type=int, default=300, help="random corruptions per sample event")
    args = ap.parse_args()

    registry = SchemaRegistry.load_dir(REPO / "schemas")
    proc = EventProcessor(registry, ["acme"], Settings().max_event_bytes)
    cipher = SubjectCipher(os.urandom(64))
    rng = random.Random(1234)
    payloads = [encode_event(registry, m("acme", "u1", random.Random(9)), "avro") for m in MAKERS]

    def decode(value: bytes) -> None:
        try:
            codec.decode(registry, value)
        except (DecodeError, UnknownSchemaError):
            pass

    def process(value: bytes) -> None:
        v = proc.validate(b"acme/u1", value, SRC)
        if not isinstance(v, Rejected):
            proc.finish(v, cipher, 1_750_000_000_000)

    def corruptions(p: bytes) -> Iterable[bytes]:
        for _ in range(args.corruptions):
            bad = bytearray(p)
            for _ in range(rng.randint(1, 4)):
                bad[rng.randrange(codec.HEADER_LEN, len(bad))] = rng.randrange(256)
            yield bytes(bad)

    deep = b'{"schema":"customer_signup","x":' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    kinds = {
        "truncation (decode)": timed((p[:cut] for p in payloads for cut in range(len(p))), decode),
        "random corruption (decode)": timed((b for p in payloads for b in corruptions(p)), decode),
        "huge declared length (validate+finish)": timed(
            (p[:i] + h + p[i + 1:] for p in payloads for i in range(codec.HEADER_LEN, len(p)) for h in HUGE), process),
        "50,000-deep JSON (validate)": timed([deep] * 5, process),
    }
    worst = 0.0
    for name, times in kinds.items():
        times.sort()
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        worst = max(worst, times[-1])
        print(f"{name:42s} n={len(times):6d}  median {statistics.median(times) * 1e3:8.3f} ms  "
              f"p99 {p99 * 1e3:8.3f} ms  max {times[-1] * 1e3:8.3f} ms")
    verdict = "within" if worst <= args.budget else "OVER"
    print(f"slowest record {worst:.3f} s: {verdict} the budget of {args.budget} s per record")
    return 0 if worst <= args.budget else 1


if __name__ == "__main__":
    sys.exit(main())
