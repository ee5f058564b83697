"""Bounding denied and excessive API calls: in-process token buckets, and denial audit records aggregated per window.

Issue 9: 13,000 requests in 15 s with one tenant's key on another tenant's
URLs each became a permanent audit record, and slowed every other tenant.
Two parts, both pure (a clock is injected) and thread-safe:

``ApiLimiter`` (429 with ``Retry-After``), checked in the web layer's event
loop before any Redis or audit work:

* every request that carries a well-formed key id takes a token from that
  key id's bucket (``STREAMS_API_RATE_PER_KEY``): one key's flood empties its
  own bucket only, never another tenant's;
* every denied request (401, 403) of a key id takes a token from that key
  id's denial bucket (``STREAMS_API_DENIED_RATE_PER_KEY``); while it is
  empty every request of the key id is refused before it reaches Redis;
* every unauthenticated denial (401: no key, a malformed, unknown or
  revoked one) takes a token from its client address's bucket
  (``STREAMS_API_RATE_PER_ADDRESS``; IPv6 by /64). While it is empty the
  address's requests without a key, or with a key id this process has not
  seen authenticate recently (made-up key ids cost nothing to invent), are
  refused. A 403 needs a valid key, which answers for it (its own denial
  bucket; it can be revoked): it does not count against the address. So a
  tenant behind the same address (a NAT, the loopback) as an attacker
  keeps working. The "authenticated recently" hint never replaces the key
  check: every admitted request is still authenticated against Redis.

Buckets hold ``2 x rate`` tokens (a two-second burst). Memory is bounded: at
most ``MAX_BUCKETS`` per kind, least recently used first out; a bucket that
has been idle long enough to be full again carries no information and is
dropped first. A rate of 0 turns that limit off.

``DenialAudit`` collects denials as counts per (who, what): the key id (or,
without a key, the client's network: IPv4 /24, IPv6 /48, never the full
address), the tenant asked for, the route, the status, why. ``flush`` (a
background thread, every window) appends ONE ``api.denied`` record per group
with its ``count`` and the window; never one per request, never on the
request path. At most ``MAX_GROUPS`` groups per window; denials beyond them
are counted in one overflow record. So a flood adds at most
``MAX_GROUPS + 1`` records per window, whatever it sends. A record never holds
a token or a subject id (only the pseudonym of the caller's own subject).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

log = logging.getLogger(__name__)

MAX_BUCKETS = 10_000  # per kind (keys, key denials, addresses, recently authenticated keys)
MAX_GROUPS = 100  # distinct (who, what) denial groups per window; the rest go to one overflow record
BURST_SECONDS = 2.0  # a bucket holds this many seconds of its rate
RECENT_AUTH_SECONDS = 600.0  # how long a key id that authenticated counts as "not made up"


def retry_after(seconds: float) -> str:
    """The ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


class BucketMap:
    """Token buckets by name, ``rate`` per second, ``burst`` tokens at most, at most ``max_buckets`` of them."""

    def __init__(self, rate: float, burst: float | None = None, max_buckets: int = MAX_BUCKETS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate * BURST_SECONDS)
        self._max, self._clock = max_buckets, clock
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # name -> [tokens, at]; LRU order
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def _refilled(self, name: str, now: float) -> list[float]:
        b = self._buckets.get(name)
        if b is None:
            self._evict(now)
            b = self._buckets[name] = [self.burst, now]
        else:
            b[0] = min(self.burst, b[0] + max(0.0, now - b[1]) * self.rate)
            b[1] = now
            self._buckets.move_to_end(name)
        return b

    def _evict(self, now: float) -> None:
        # From the least recently used on: drop idle ones (full again: dropping them changes nothing),
        # and, while the map is at its cap, any.
        while self._buckets:
            name, (tokens, at) = next(iter(self._buckets.items()))
            if len(self._buckets) < self._max and tokens + (now - at) * self.rate < self.burst:
                break
            del self._buckets[name]

    def wait(self, name: str) -> float:
        """Seconds until ``name`` has a token (0: it has one now). Takes nothing."""
        if not self.enabled:
            return 0.0
        with self._lock:
            tokens = self._refilled(name, self._clock())[0]
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate

    def take(self, name: str) -> float:
        """Take a token: 0.0 if there was one, else the seconds until there is one (nothing taken)."""
        if not self.enabled:
            return 0.0
        with self._lock:
            b = self._refilled(name, self._clock())
            if b[0] >= 1:
                b[0] -= 1
                return 0.0
            return (1 - b[0]) / self.rate

    def charge(self, name: str) -> None:
        """Take a token after the fact (a denial already happened), into debt down to ``-burst``.

        Requests admitted together (``wait`` saw a token) are all charged: the debt is paid back before
        the next one is admitted, so concurrent clients cannot multiply the rate, only shift it."""
        if not self.enabled:
            return
        with self._lock:
            b = self._refilled(name, self._clock())
            b[0] = max(-self.burst, b[0] - 1)


@functools.lru_cache(maxsize=4096)  # parsing an address costs more than the rest of a refusal; bounded memory
def address_bucket(address: str | None) -> str | None:
    """The bucket of a client address: IPv4 as is, IPv6 by its /64 (one host gets a whole /64)."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    ip = _unmapped(ip)
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _unmapped(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IPv4 client seen through an IPv6 socket (::ffff:a.b.c.d) is that IPv4 client."""
    mapped = getattr(ip, "ipv4_mapped", None)
    return mapped if mapped is not None else ip


@functools.lru_cache(maxsize=4096)
def address_for_audit(address: str | None) -> str | None:
    """What the audit may keep of a client address: its network (IPv4 /24, IPv6 /48), never the host."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "unparseable"
    ip = _unmapped(ip)
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


@dataclass(frozen=True)
class Refusal:
    """A request the limiter refused: why (for the denial audit) and when to retry."""

    reason: str
    retry_after_s: float
    by_address: bool = False  # the address is who: its bucket refused it, or its key id never authenticated


class ApiLimiter:
    """The per-key, per-key-denial and per-address buckets (see the module docstring)."""

    def __init__(self, rate_per_key: float, denied_rate_per_key: float, rate_per_address: float,
                 clock: Callable[[], float] = time.monotonic, max_buckets: int = MAX_BUCKETS) -> None:
        self.keys = BucketMap(rate_per_key, clock=clock, max_buckets=max_buckets)
        self.key_denials = BucketMap(denied_rate_per_key, clock=clock, max_buckets=max_buckets)
        self.addresses = BucketMap(rate_per_address, clock=clock, max_buckets=max_buckets)
        self._clock = clock
        self._max = max_buckets
        self._authenticated: OrderedDict[str, float] = OrderedDict()  # key id -> when it last authenticated
        self._lock = threading.Lock()

    def recently_authenticated(self, key_id: str) -> bool:
        with self._lock:
            at = self._authenticated.get(key_id)
            return at is not None and self._clock() - at < RECENT_AUTH_SECONDS

    def authenticated(self, key_id: str) -> None:
        """The key id authenticated against the key store (it is not made up)."""
        with self._lock:
            self._authenticated[key_id] = self._clock()
            self._authenticated.move_to_end(key_id)
            while len(self._authenticated) > self._max:
                self._authenticated.popitem(last=False)

    def admit(self, key_id: str | None, address: str | None) -> Refusal | None:
        """None if the request may go on (to authentication), else why not and when to retry. No I/O."""
        addr = address_bucket(address)
        proven = key_id is not None and self.recently_authenticated(key_id)
        if addr is not None and not proven:
            wait = self.addresses.wait(addr)
            if wait:
                return Refusal("too many unauthenticated requests from this address", wait, by_address=True)
        if key_id is not None:
            wait = self.key_denials.wait(key_id)
            if wait:
                return Refusal("too many denied requests with this API key", wait, by_address=not proven)
            wait = self.keys.take(key_id)
            if wait:
                return Refusal("too many requests with this API key", wait, by_address=not proven)
        return None

    def denied(self, key_id: str | None, address: str | None, authenticated: bool) -> None:
        """A request was denied (401, 403): it counts against its key id and, when it was not
        authenticated (401), against its address."""
        if key_id is not None:
            self.key_denials.charge(key_id)
        addr = address_bucket(address) if not authenticated else None
        if addr is not None:
            self.addresses.charge(addr)


# ---------------------------------------------------------------- the denial audit


class AuditSink(Protocol):
    def append(self, action: str, tenant: str | None, subject_pseudonym: str | None, reason: str,
               details: Mapping[str, Any] | None = None, *, actor: str | None = None) -> Any: ...


@dataclass(frozen=True)
class Denial:
    """One group of denials: who (key id, else the client's network), what (tenant asked for, route, status), why."""

    route: str
    status: int
    reason: str
    tenant: str | None = None
    key_id: str | None = None
    key_role: str | None = None
    key_tenant: str | None = None
    network: str | None = None  # only when there is no key id (address_for_audit)
    subject: str | None = None  # the pseudonym of the caller's own subject, when there is one


MAX_KEY_ID_SAMPLES = 10


class DenialAudit:
    """Counts denials per group and window; ``flush`` writes one ``api.denied`` record per group."""

    def __init__(self, sink: AuditSink, window: float, clock: Callable[[], float] = time.monotonic,
                 wall_ms: Callable[[], int] = lambda: int(time.time() * 1000), max_groups: int = MAX_GROUPS) -> None:
        self._sink, self.window, self._clock, self._wall_ms, self._max = sink, window, clock, wall_ms, max_groups
        self._counts: dict[Denial, int] = {}
        # Groups of key ids that never authenticated (made up, revoked): the group is the network, and these are
        # the first few key ids it used (key ids are not secret; a revoked key's id is worth seeing).
        self._samples: dict[Denial, set[str]] = {}
        self._more: set[Denial] = set()
        self._overflow = 0
        self._since_ms = wall_ms()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, d: Denial, n: int = 1, unproven_key_id: str | None = None) -> None:
        """Count a denial (in memory only; never writes). ``unproven_key_id``: a key id that did not
        authenticate, kept as one of the group's samples instead of making a group of its own (anyone can make
        up key ids)."""
        with self._lock:
            if d in self._counts:
                self._counts[d] += n
            elif len(self._counts) < self._max:
                self._counts[d] = n
            else:
                self._overflow += n
                return
            if unproven_key_id is not None:
                samples = self._samples.setdefault(d, set())
                if unproven_key_id in samples or len(samples) < MAX_KEY_ID_SAMPLES:
                    samples.add(unproven_key_id)
                else:
                    self._more.add(d)

    def pending(self) -> int:
        with self._lock:
            return sum(self._counts.values()) + self._overflow

    def flush(self) -> int:
        """Append one record per group counted since the last flush; returns how many were written.

        Groups whose append failed are counted again for the next flush (within the group cap)."""
        with self._flush_lock:
            with self._lock:
                counts, overflow, since = self._counts, self._overflow, self._since_ms
                samples, more = self._samples, self._more
                self._counts, self._overflow, self._since_ms = {}, 0, self._wall_ms()
                self._samples, self._more = {}, set()
            until = self._since_ms
            written = 0
            failed: list[tuple[Denial, int]] = []
            for d, n in counts.items():
                key_id = d.key_id
                ids = sorted(samples.get(d, ()))
                if key_id is None and len(ids) == 1 and d not in more:
                    key_id = ids[0]  # one key id only (a revoked key, typically): it is who
                details = {"status": d.status, "route": d.route, "key_id": key_id, "key_role": d.key_role,
                           "key_tenant": d.key_tenant, "count": n, "window_start_ms": since, "window_end_ms": until}
                if d.network is not None:
                    details["network"] = d.network
                if key_id is None and ids:
                    details["key_ids"] = ",".join(ids)  # some of the key ids it used (details hold scalars only)
                    details["more_key_ids"] = d in more
                try:
                    self._sink.append("api.denied", d.tenant, d.subject, d.reason, details,
                                      actor=f"api:{key_id}" if key_id else "api")
                    written += 1
                except Exception as exc:
                    log.warning("api: %d denials not audited yet (%s); retried at the next flush", n,
                                type(exc).__name__)
                    failed.append((d, n))
            if overflow:
                try:
                    self._sink.append("api.denied", None, None, "denials beyond the per-window group limit",
                                      {"status": None, "route": None, "key_id": None, "count": overflow,
                                       "overflow": True, "max_groups": self._max, "window_start_ms": since,
                                       "window_end_ms": until}, actor="api")
                    written += 1
                except Exception as exc:
                    log.warning("api: %d overflow denials not audited yet (%s)", overflow, type(exc).__name__)
                    with self._lock:
                        self._overflow += overflow
            for d, n in failed:
                self.add(d, n)
                for key_id in samples.get(d, ()):
                    self.add(d, 0, key_id)
            if written:
                log.info("api: %d denied requests audited in %d records", sum(counts.values()) + overflow, written)
            return written

    # ------------------------------------------------------------ the background flush

    def start(self) -> None:
        """Flush every ``window`` seconds in a daemon thread (off the request path)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="streams-api-denials", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.window):
            try:
                self.flush()
            except Exception as exc:  # never let the thread die
                log.warning("api: denial audit flush failed (%s)", type(exc).__name__)

    def close(self) -> None:
        """Stop the background flush and write what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.window + 5)
            self._thread = None
        self.flush()
