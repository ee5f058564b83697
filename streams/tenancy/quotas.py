"""Kafka client quotas of a tenant's principals (DESIGN decision 8: one tenant never slows the others).

A tenant's quota has up to three parts, set per *user principal* on the broker, which enforces
them (it delays its responses and mutes the connection of a client over its quota, and tells
the client the ``throttle_time_ms``):

- ``produce``: bytes/s its producers (``producer-<t>``) may write: ``producer_byte_rate``;
- ``fetch``: bytes/s its consumers (``tenant-<t>``) may read: ``consumer_byte_rate``;
- ``request``: the percentage of one broker network/IO thread's time each of its principals may
  use: ``request_percentage`` on both users.

The operator's syntax is ``produce=1048576,fetch=2097152,request=25`` (any subset; ``none`` as
a value removes that part, e.g. ``produce=none``; ``none`` alone removes all three). There is
no default: a tenant without ``--quota`` is not throttled by the broker (a default that fits
no deployment's hardware would throttle a legitimate tenant; the worker's fair share of each
batch, ``streams.ingest.fairness``, already keeps a flooding tenant from starving the others).

How quotas reach the broker: confluent-kafka-python (2.16) has no client-quota admin calls
(``AdminClient`` lists none), and the Java ``kafka-configs`` tool needs a JVM, absent from the
worker image and from operators' machines that only run ``streams``. So the two protocol
requests are sent with aiokafka's client (already a dependency, through Faust), which does
the SASL/SCRAM login and version negotiation: DescribeClientQuotas (API 48, aiokafka's own
struct) and AlterClientQuotas (API 49, v0, defined below from Kafka's message spec
``AlterClientQuotasRequest.json``; Kafka 4.1 serves v0-v1). What ``describe`` shows is read
back from the broker, never from a copy of ours.
"""

from __future__ import annotations

import asyncio
import math
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping, TypeAlias

from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Boolean, Float64, Int16, Int32, Schema, String

from streams.connections import aiokafka_connection
from streams.settings import Settings
from streams.tenancy.exceptions import OnboardingError
from streams.tenancy.registry import principal_names, producer_principal

TIMEOUT = 30.0

#: The operator's names -> the broker's quota keys.
QUOTA_KEYS = {"produce": "producer_byte_rate", "fetch": "consumer_byte_rate", "request": "request_percentage"}
#: Which principal each part applies to ("consumer" = tenant-<t>, "producer" = producer-<t>).
QUOTA_PRINCIPALS = {"produce": ("producer",), "fetch": ("consumer",), "request": ("consumer", "producer")}
MIN_BYTE_RATE = 1024          # below 1 KiB/s a single record would be throttled for seconds
MAX_BYTE_RATE = 2 ** 40       # 1 TiB/s: "no quota" is said with `none`, not a huge number
MAX_REQUEST_PERCENTAGE = 10_000  # Kafka counts 100 per network+IO thread; a sanity cap, not a policy



@dataclass(frozen=True)
class TenantQuota:
    """What the operator asked for: each part absent (leave as is), a number (set) or None (remove)."""

    parts: tuple[tuple[str, float | None], ...] = ()

    def as_dict(self) -> dict[str, float | None]:
        return dict(self.parts)

    def __bool__(self) -> bool:
        return bool(self.parts)

    def text(self) -> str:
        """The operator's syntax again (``produce=1048576,request=25,fetch=none``)."""
        return ",".join(f"{k}={_num(v)}" for k, v in self.parts)


def _num(v: float | None) -> str:
    if v is None:
        return "none"
    return str(int(v)) if v == int(v) else repr(v)


def parse_quota(text: str) -> TenantQuota:
    """``produce=1048576,fetch=2097152,request=25`` (any subset; ``X=none`` removes part X; ``none``
    alone removes all). Raises OnboardingError saying what is wrong."""
    text = (text or "").strip()
    if not text:
        raise OnboardingError("--quota is empty: give e.g. produce=1048576,fetch=2097152,request=25, or none")
    if text.lower() == "none":
        return TenantQuota(tuple((k, None) for k in QUOTA_KEYS))
    parts: dict[str, float | None] = {}
    for item in text.split(","):
        name, sep, raw = item.strip().partition("=")
        name, raw = name.strip().lower(), raw.strip()
        if not sep or name not in QUOTA_KEYS:
            raise OnboardingError(f"--quota: {item.strip()!r} is not one of produce=BYTES/S, fetch=BYTES/S, "
                                  "request=PERCENT (or X=none)")
        if name in parts:
            raise OnboardingError(f"--quota: {name} given twice")
        parts[name] = _value(name, raw)
    return TenantQuota(tuple(parts.items()))


def quota_from_mapping(obj: Mapping[str, Any]) -> TenantQuota:
    """The HTTP body's form: ``{"produce": 1048576, "fetch": null, ...}`` (null removes a part)."""
    parts: dict[str, float | None] = {}
    for name, raw in obj.items():
        if name not in QUOTA_KEYS:
            raise OnboardingError(f"quota: unknown part {name!r} (produce, fetch, request)")
        if raw is None:
            parts[name] = None
        elif isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise OnboardingError(f"quota: {name} must be a number or null")
        else:
            parts[name] = _value(name, repr(raw))
    if not parts:
        raise OnboardingError("quota: give at least one of produce, fetch, request")
    return TenantQuota(tuple(parts.items()))


def _value(name: str, raw: str) -> float | None:
    if raw.lower() == "none":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise OnboardingError(f"--quota: {name}={raw!r} is not a number") from None
    if not math.isfinite(value):
        raise OnboardingError(f"--quota: {name} must be finite")
    if name == "request":
        if not 0 < value <= MAX_REQUEST_PERCENTAGE:
            raise OnboardingError(f"--quota: request must be a percentage above 0 and at most {MAX_REQUEST_PERCENTAGE}")
        return value
    if value != int(value) or not MIN_BYTE_RATE <= value <= MAX_BYTE_RATE:
        raise OnboardingError(f"--quota: {name} must be whole bytes per second, from {MIN_BYTE_RATE} to {MAX_BYTE_RATE}")
    return float(int(value))


def quota_ops(tenant: str, quota: TenantQuota) -> dict[str, dict[str, float | None]]:
    """{principal: {broker quota key: value or None (remove)}} for the tenant's two users."""
    consumer, _ = principal_names(tenant)
    users = {"consumer": consumer, "producer": producer_principal(tenant)}
    out: dict[str, dict[str, float | None]] = {}
    for name, value in quota.parts:
        for who in QUOTA_PRINCIPALS[name]:
            out.setdefault(users[who], {})[QUOTA_KEYS[name]] = value
    return out


def remove_all_ops(tenant: str) -> dict[str, dict[str, float | None]]:
    return quota_ops(tenant, TenantQuota(tuple((k, None) for k in QUOTA_KEYS)))


# ---------------------------------------------------------------- the AlterClientQuotas request (API 49)

class AlterClientQuotasResponse_v0(Response):
    API_KEY = 49
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("entries", Array(
            ("error_code", Int16),
            ("error_message", String("utf-8")),
            ("entity", Array(("entity_type", String("utf-8")), ("entity_name", String("utf-8")))),
        )),
    )


class AlterClientQuotasRequest_v0(RequestStruct):
    API_KEY = 49
    API_VERSION = 0
    RESPONSE_TYPE = AlterClientQuotasResponse_v0
    SCHEMA = Schema(
        ("entries", Array(
            ("entity", Array(("entity_type", String("utf-8")), ("entity_name", String("utf-8")))),
            ("ops", Array(("key", String("utf-8")), ("value", Float64), ("remove", Boolean))),
        )),
        ("validate_only", Boolean),
    )


AlterClientQuotasRequestStruct: TypeAlias = AlterClientQuotasRequest_v0


class AlterClientQuotasRequest(Request[AlterClientQuotasRequestStruct]):
    API_KEY = 49

    def __init__(self, entries: list[Any], validate_only: bool = False) -> None:
        self._entries = entries
        self._validate_only = validate_only

    def build(self, request_struct_class: type[AlterClientQuotasRequestStruct]) -> AlterClientQuotasRequestStruct:
        return request_struct_class(self._entries, self._validate_only)


def alter_entries(ops: Mapping[str, Mapping[str, float | None]]) -> list[Any]:
    """The request's entries: one per user, each op a set (value) or a removal (None)."""
    return [([("user", user)], [(key, 0.0 if value is None else float(value), value is None)
                                for key, value in sorted(keys.items())])
            for user, keys in sorted(ops.items()) if keys]


# ---------------------------------------------------------------- the client

class ClientQuotas:
    """Set, read and remove user quotas on the broker (blocking calls; each runs its own
    event loop on a private thread, so callers inside or outside an event loop may use it)."""

    def __init__(self, settings: Settings,
                 client_factory: Callable[[Settings], Any] | None = None) -> None:
        self.settings = settings
        self._client_factory = client_factory or _aiokafka_client

    def alter(self, ops: Mapping[str, Mapping[str, float | None]]) -> None:
        entries = alter_entries(ops)
        if not entries:
            return
        resp = self._run(lambda c, node: c.send(node, AlterClientQuotasRequest(entries)))
        errors = [(e[0], e[1], e[2]) for e in resp.entries if e[0] != 0]
        if errors:
            code, message, entity = errors[0]
            who = ",".join(f"{t}={n}" for t, n in entity)
            raise OnboardingError(f"setting Kafka quotas of {who} failed: error {code} {message or ''}".strip())

    def describe(self, users: list[str]) -> dict[str, dict[str, float]]:
        """{user: {quota key: value}} as the broker holds them (a user without quotas: {})."""
        from aiokafka.protocol.admin import DescribeClientQuotasRequest

        out: dict[str, dict[str, float]] = {u: {} for u in users}
        for user in users:
            # match_type 0: exact name; strict: entries of this user alone (not user+client-id).
            req = DescribeClientQuotasRequest([("user", 0, user)], True)
            resp = self._run(lambda c, node, r=req: c.send(node, r))
            if resp.error_code != 0:
                raise OnboardingError(f"reading Kafka quotas of {user} failed: error {resp.error_code} "
                                      f"{resp.error_message or ''}".strip())
            for entity, values in resp.entries:
                if list(entity) == [("user", user)]:
                    out[user] = {k: v for k, v in values}
        return out

    def _run(self, call: Callable[[Any, int], Any]) -> Any:
        result: dict[str, Any] = {}

        async def go() -> Any:
            client = self._client_factory(self.settings)
            await client.bootstrap()
            try:
                node = client.get_random_node()
                return await asyncio.wait_for(call(client, node), TIMEOUT)
            finally:
                await client.close()

        def thread() -> None:
            try:
                result["value"] = asyncio.run(go())
            except BaseException as exc:  # re-raised in the caller's thread
                result["error"] = exc

        t = threading.Thread(target=thread, name="streams-client-quotas", daemon=True)
        t.start()
        t.join(TIMEOUT + 15)
        if t.is_alive():
            raise OnboardingError("the broker did not answer the quota request in time")
        if "error" in result:
            exc = result["error"]
            if isinstance(exc, OnboardingError):
                raise exc
            # Type only: an aiokafka message may name the broker, never a secret, but stay terse.
            raise OnboardingError(f"the quota request to the broker failed ({type(exc).__name__})") from None
        return result["value"]


def _aiokafka_client(settings: Settings) -> Any:
    from aiokafka import AIOKafkaClient

    return AIOKafkaClient(**aiokafka_connection(settings), client_id="streams-quotas",
                          request_timeout_ms=int(TIMEOUT * 1000))


def describe_tenant(quotas: ClientQuotas, tenant: str) -> dict[str, Any]:
    """What ``tenants describe`` shows: per principal, the broker's values, and the operator's view."""
    consumer, _ = principal_names(tenant)
    producer = producer_principal(tenant)
    held = quotas.describe([producer, consumer])
    view: dict[str, float] = {}
    inverse = {v: k for k, v in QUOTA_KEYS.items()}
    for user, keys in held.items():
        for key, value in keys.items():
            name = inverse.get(key)
            if name == "produce" and user == producer or name == "fetch" and user == consumer \
                    or name == "request" and user == producer:
                view[name] = value
    return {"by_principal": held, "quota": {k: (int(v) if k != "request" and v == int(v) else v)
                                            for k, v in view.items()}}
