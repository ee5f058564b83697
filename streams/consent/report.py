"""The compliance report of a tenant: what was processed, delivered, dropped and dead-lettered, and its privacy requests.

Counts come from ``k:{t}:stats`` (counted at least once, like delivery: a
batch replayed after a crash is counted again); requests from their receipts.
"""

from __future__ import annotations

import statistics
from typing import Any

import redis

from streams.consent import request_types
from streams.consent.store import ConsentStore
from streams.keyspace import stats_key


def compliance_report(client: redis.Redis, tenant: str) -> dict[str, Any]:
    raw = client.hgetall(stats_key(tenant))
    counts = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
    receipts = ConsentStore(client).receipts(tenant)
    # A type no longer registered (a plugin removed) still counts by name; it erases if it did.
    erasures = [r for r in receipts if getattr(request_types.kind(r["type"]), "erases", False)
                or r["type"] in ("erase", "erase_and_suppress")]
    took = [r["completed_at_ms"] - r["filed_at_ms"] for r in erasures if r.get("status") == "done"]
    return {
        "tenant": tenant,
        "events": {
            "processed": counts.get("processed", 0),
            "delivered": counts.get("delivered", 0),
            "dropped_for_consent": {k[len("dropped_"):]: v for k, v in counts.items() if k.startswith("dropped_")},
            "dead_lettered": {k[len("dlq_"):]: v for k, v in counts.items() if k.startswith("dlq_")},
        },
        "privacy_requests": {
            "total": len(receipts),
            "by_type": {t: sum(1 for r in receipts if r["type"] == t) for t in sorted({r["type"] for r in receipts})},
            # Waiting for the tenant's damaged records to be repaired (streams.erasure.parking).
            "parked": sum(1 for r in receipts if r.get("status") == "parked"),
        },
        "erasures": {
            "completed": len(took),
            "p50_ms": statistics.median(took) if took else None,
            "max_ms": max(took) if took else None,
            "requests": [{"request_id": r["request_id"], "subject": r["subject"], "filed_at_ms": r["filed_at_ms"],
                          "completed_at_ms": r.get("completed_at_ms"), "status": r.get("status")}
                         for r in erasures],
        },
    }
