"""Realistic sample events (JSON-style dicts with a ``schema`` member).

Used by the demo, the tests and the benchmark, so all three exercise the same
shapes. Values are synthetic; ``overrides`` lets a test plant canary PII.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from streams.schema.registry import SchemaRegistry

_FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret", "Ken", "Radia", "Tim"]
_LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Hamilton", "Thompson", "Perlman", "Berners"]
_CITIES = [("Berlin", "DE", "10115"), ("Lyon", "FR", "69001"), ("Leeds", "GB", "LS1 4AP"), ("Austin", "US", "73301")]
_TEXTS = [
    "My parcel has not arrived yet, can you check the tracking?",
    "Please change the delivery address on my last order.",
    "The invoice shows the wrong amount, I was charged twice.",
]


def _now_ms() -> int:
    return int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)


def _common(schema: str, tenant: str, subject: str, rng: random.Random) -> dict[str, Any]:
    return {
        "schema": schema,
        "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "tenant_id": tenant,
        "subject_id": subject,
        "event_time": _now_ms(),
    }


def signup(tenant: str, subject: str, rng: random.Random | None = None, **overrides: Any) -> dict[str, Any]:
    rng = rng or random.Random()
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    e = _common("customer_signup", tenant, subject, rng) | {
        "full_name": f"{first} {last}",
        "email": f"{first.lower()}.{last.lower()}{rng.randint(1, 999)}@example.com",
        "phone": f"+49 30 {rng.randint(1000000, 9999999)}",
        "birth_date": dt.date(rng.randint(1950, 2005), rng.randint(1, 12), rng.randint(1, 28)).isoformat(),
        "country": rng.choice(_CITIES)[1],
        "signup_channel": rng.choice(["WEB", "MOBILE", "STORE"]),
        "marketing_opt_in": rng.random() < 0.4,
    }
    return e | overrides


def order(tenant: str, subject: str, rng: random.Random | None = None, **overrides: Any) -> dict[str, Any]:
    rng = rng or random.Random()
    city, country, postal = rng.choice(_CITIES)
    items = [{"sku": f"SKU-{rng.randint(100, 999)}", "quantity": rng.randint(1, 3),
              "unit_price_cents": rng.randint(199, 9999)} for _ in range(rng.randint(1, 3))]
    e = _common("order_placed", tenant, subject, rng) | {
        "order_id": f"ORD-{rng.randint(100000, 999999)}",
        "items": items,
        "total_cents": sum(i["quantity"] * i["unit_price_cents"] for i in items),
        "currency": "EUR",
        "shipping_address": {"recipient_name": f"{rng.choice(_FIRST)} {rng.choice(_LAST)}",
                             "street": f"{rng.randint(1, 200)} Sample Street", "city": city,
                             "postal_code": postal, "country": country},
    }
    return e | overrides


def support(tenant: str, subject: str, rng: random.Random | None = None, **overrides: Any) -> dict[str, Any]:
    rng = rng or random.Random()
    e = _common("support_message", tenant, subject, rng) | {
        "ticket_id": f"T-{rng.randint(1000, 9999)}",
        "channel": rng.choice(["EMAIL", "CHAT", "PHONE"]),
        "reply_to": f"{rng.choice(_FIRST).lower()}@example.org",
        "body": rng.choice(_TEXTS),
        "sentiment_hint": None,
    }
    return e | overrides


def stream(tenants: list[str], n: int, seed: int = 7, subjects_per_tenant: int = 50) -> Iterator[dict[str, Any]]:
    """``n`` mixed valid events spread over tenants and subjects, reproducible by seed."""
    rng = random.Random(seed)
    makers = [signup, order, order, support]
    for _ in range(n):
        tenant = rng.choice(tenants)
        subject = f"u{rng.randrange(subjects_per_tenant):05d}"
        yield rng.choice(makers)(tenant, subject, rng)


def bad_records(tenant: str, registry: "SchemaRegistry", max_event_bytes: int,
                canary: str = "bad.actor@example.com") -> list[tuple[str, bytes | None, bytes]]:
    """One raw record of each bad kind, as (expected DLQ reason, key, value).

    Each carries personal data (``canary``) so tests can prove it never
    reaches the DLQ or a log in the clear.
    """
    from streams.ingest.producer import encode_event
    from streams.schema.codec import MAGIC

    rng = random.Random(99)
    good = signup(tenant, "u-bad", rng, email=canary, full_name=f"Canary {canary}")
    key = f"{tenant}/u-bad".encode()
    avro = encode_event(registry, good, "avro")
    json_good = encode_event(registry, good, "json")

    def as_json(event: dict[str, Any]) -> bytes:
        import json

        return json.dumps(event).encode()

    return [
        ("undecodable", key, b"\x00\x01garbage " + canary.encode()),
        ("undecodable", key, avro[: len(avro) // 2]),  # truncated Avro body
        ("unknown_schema", key, MAGIC + b"\xde\xad\xbe\xef\x00\x00\x00\x00" + avro[10:]),
        ("unknown_schema", key, as_json(good | {"schema": "no_such_event"})),
        ("schema_violation", key, as_json(good | {"birth_date": f"born {canary}"})),
        ("missing_tenant", b"/u-bad", as_json(good | {"tenant_id": ""})),
        ("unknown_tenant", b"nosuchtenant/u-bad", as_json(good | {"tenant_id": "nosuchtenant"})),
        ("oversized", key, json_good[:-1] + b', "pad": "' + canary.encode() * (max_event_bytes // len(canary) + 1) + b'"}'),
        ("key_mismatch", f"{tenant}/someone-else".encode(), avro),
    ]
