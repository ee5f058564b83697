"""The data API over HTTP on a real worker: reads, isolation across two tenants, validation, injection, detokenize.

Each test starts one worker with its web server on a free port below the
ephemeral range, publishes events, creates API keys directly in Redis and
calls the API with urllib, as any client would.
"""

from __future__ import annotations

import json
import random
import socket
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
import redis

from streams.api.api_keys import ApiKeyStore, Role
from streams.audit.log import read_all
from streams.ingest import samples
from streams.ingest.producer import EventProducer
from streams.schema.registry import SchemaRegistry

pytestmark = pytest.mark.e2e

EMAIL = "api.person@example.com"


def free_port() -> int:
    """A free TCP port below 32768: the ephemeral range above it may be taken by a client's own socket."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below 32768")


def call(base: str, path: str, token: str | None = None, method: str = "GET", body: Any = None,
         headers: dict[str, str] | None = None, raw_body: bytes | None = None) -> tuple[int, dict[str, str], Any]:
    """(status, headers, parsed JSON body or the text when not JSON)."""
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    data = raw_body if raw_body is not None else (json.dumps(body).encode() if body is not None else None)
    if data is not None:
        h.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(base + path, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, hdrs, payload = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        status, hdrs, payload = exc.code, dict(exc.headers), exc.read()
    try:
        return status, hdrs, json.loads(payload)
    except ValueError:
        return status, hdrs, payload.decode(errors="replace")


def wait_until(fn, timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = fn()
        except (urllib.error.URLError, ConnectionError, OSError):
            value = None
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def api_env(make_settings, start_worker):
    """A worker with its web server, events of two tenants in the store, and a key of each kind."""
    s = make_settings(web_enabled=True, web_port=free_port())
    a, b = sorted(s.tenants)
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    rng = random.Random(11)
    events = [samples.signup(a, "u-1", rng, email=EMAIL, event_time=1_700_000_000_000)]
    events += [samples.order(a, "u-1", rng, event_time=1_700_000_001_000 + i) for i in range(3)]
    events += [samples.signup(b, "u-1", rng, event_time=1_700_000_000_000)]
    producer = EventProducer(s.kafka_bootstrap, s.raw_topic, registry)
    producer.send_many(events)
    producer.flush()

    keys = ApiKeyStore(redis.Redis.from_url(s.redis_url))
    tokens = {name: keys.create(tenant, role, name) for name, tenant, role in [
        ("a_reader", a, Role.READER), ("a_detok", a, Role.DETOKENIZER), ("b_reader", b, Role.READER),
        ("operator", None, Role.OPERATOR)]}
    worker = start_worker(s)
    base = f"http://127.0.0.1:{s.web_port}"
    wait_until(lambda: call(base, f"/v1/tenants/{a}/counts", tokens["a_reader"][1])[2].get("count") == 4
               and call(base, f"/v1/tenants/{b}/counts", tokens["b_reader"][1])[2].get("count") == 1,
               what="the events in the store, through the API")
    yield s, base, a, b, events, {k: v[1] for k, v in tokens.items()}, {k: v[0] for k, v in tokens.items()}
    assert worker.traceback_excerpt() is None, worker.traceback_excerpt()


def test_reads_and_isolation(api_env):
    s, base, a, b, events, tok, _ = api_env
    status, _, doc = call(base, "/openapi.json")
    assert status == 200 and "/v1/tenants/{tenant}/events" in doc["paths"]

    status, hdrs, body = call(base, f"/v1/tenants/{a}/subjects/u-1/events?limit=2", tok["a_reader"])
    assert status == 200 and hdrs["Content-Type"].startswith("application/json")
    assert [d["event_id"] for d in body["events"]] == [e["event_id"] for e in events[:2]]
    assert body["paging"]["next_offset"] == 2 and hdrs["Cache-Control"] == "no-store"
    status, _, body = call(base, f"/v1/tenants/{a}/subjects/u-1/events?limit=2&offset=2", tok["a_reader"])
    assert [d["event_id"] for d in body["events"]] == [e["event_id"] for e in events[2:4]]
    assert body["paging"]["next_offset"] is None

    status, _, body = call(base, f"/v1/tenants/{a}/events?type=order_placed&start=1700000001001&end=1700000002000",
                           tok["a_reader"])
    assert status == 200 and [d["event_id"] for d in body["events"]] == [e["event_id"] for e in events[2:4]]
    status, _, body = call(base, f"/v1/tenants/{a}/events/{events[0]['event_id']}", tok["a_reader"])
    assert status == 200 and body["event"]["event"]["email"].startswith("tok.email.")
    assert EMAIL not in json.dumps(body)
    status, _, body = call(base, f"/v1/tenants/{a}/counts?type=order_placed", tok["a_reader"])
    assert (status, body["count"]) == (200, 3)
    status, _, body = call(base, f"/v1/tenants/{a}/events/00000000-0000-4000-8000-000000000000", tok["a_reader"])
    assert status == 404 and body["error"]["code"] == "not_found"

    # 401: no key, a malformed key, a well-formed unknown key.
    for token in (None, "nonsense", "stk_000000000000_" + "A" * 43):
        status, hdrs, body = call(base, f"/v1/tenants/{a}/counts", token)
        assert status == 401 and hdrs["WWW-Authenticate"].startswith("Bearer") and body["error"]["code"]
    status, _, _ = call(base, f"/v1/tenants/{a}/counts", headers={"X-API-Key": tok["a_reader"]})
    assert status == 200

    # 403: A's key on B (existing, with data) and on a tenant that does not exist: one and the same answer.
    # B's subject u-1 exists too, and its event id is real: nothing of that shows.
    b_event = events[4]["event_id"]
    answers = [call(base, p, tok["a_reader"]) for p in (
        f"/v1/tenants/{b}/counts", "/v1/tenants/nosuchtenant/counts",
        f"/v1/tenants/{b}/events/{b_event}", f"/v1/tenants/nosuchtenant/events/{b_event}",
        f"/v1/tenants/{b}/subjects/u-1/events", "/v1/tenants/nosuchtenant/subjects/u-1/events")]
    assert {st for st, _, _ in answers} == {403}
    assert len({json.dumps(body, sort_keys=True) for _, _, body in answers}) == 1
    status, _, body = call(base, f"/v1/tenants/{a}/events", tok["operator"])
    assert status == 403 and "operator" in body["error"]["message"]
    assert call(base, f"/v1/tenants/{b}/counts", tok["b_reader"])[2]["count"] == 1


def test_bad_parameters_and_injection_are_4xx_never_5xx(api_env):
    s, base, a, b, events, tok, _ = api_env
    t = tok["a_reader"]
    status, _, body = call(base, f"/v1/tenants/{a}/events?limit=100000000", t)
    assert status == 400 and "'limit'" in body["error"]["message"]
    for q in ("limit=abc", "limit=0", "offset=-1", "start=5&end=4", "start=1.5", "type=Order", "limt=5",
              "limit=1&limit=2"):
        status, _, body = call(base, f"/v1/tenants/{a}/events?{q}", t)
        assert status == 400 and body["error"]["code"] == "invalid_parameter", q

    status, _, body = call(base, "/v1/tenants/acme/nothing-here", t)
    assert status == 404 and body["error"]["code"] == "not_found"
    status, hdrs, body = call(base, f"/v1/tenants/{a}/events", t, method="DELETE")
    assert status == 405 and "GET" in hdrs["Allow"] and body["error"]["code"] == "method_not_allowed"

    # The same injections from each tenant's reader against its own tenant, naming the other one
    # (A against B and B against A). Every answer, JSON or not, is a 4xx with no traceback, no raw
    # PII and no event id of either tenant.
    ids_of = {a: [e["event_id"] for e in events if e["tenant_id"] == a], b: [e["event_id"] for e in events if e["tenant_id"] == b]}
    assert ids_of[a] and ids_of[b]
    checked = 0
    for x, y, t in ((a, b, tok["a_reader"]), (b, a, tok["b_reader"])):
        for path in _injections(x, y):
            status, _, body = call(base, path, t)
            assert 400 <= status < 500, (path, status, body)
            text = json.dumps(body) if not isinstance(body, str) else body
            assert "Traceback" not in text and EMAIL not in text, (path, text)
            assert not [i for i in ids_of[a] + ids_of[b] if i in text], (path, text)
            checked += 1
    assert checked == 2 * len(_injections(a, b))
    # The store's keyspaces are untouched, and each tenant's answers hold only its own events.
    assert call(base, f"/v1/tenants/{a}/counts", tok["a_reader"])[2]["count"] == 4
    assert call(base, f"/v1/tenants/{b}/counts", tok["b_reader"])[2]["count"] == 1
    for x, y, t in ((a, b, tok["a_reader"]), (b, a, tok["b_reader"])):
        got = [d["event_id"] for d in call(base, f"/v1/tenants/{x}/events?limit=100", t)[2]["events"]]
        assert sorted(got) == sorted(ids_of[x]) and not set(got) & set(ids_of[y]), (x, got)


def _injections(a: str, b: str) -> list[str]:
    """Paths of tenant ``a`` that try traversal, wildcards, control characters, oversize values and
    key patterns naming tenant ``b``."""
    return [
        f"/v1/tenants/{a}/subjects/../events", f"/v1/tenants/{a}/subjects/%2E%2E/events",
        f"/v1/tenants/{a}/subjects/*/events", f"/v1/tenants/{a}/subjects/%2A/events",
        f"/v1/tenants/{a}/subjects/u-%3F/events", f"/v1/tenants/{a}/subjects/%7Bx%7D/events",
        f"/v1/tenants/{a}/subjects/a%0Ab/events", f"/v1/tenants/{a}/subjects/a%0D%0AX:%20y/events",
        f"/v1/tenants/{a}/subjects/a%2Fb/events", f"/v1/tenants/{a}/subjects/a%00/events",
        f"/v1/tenants/{a}/subjects/%5Ba-z%5D/events", f"/v1/tenants/{a}/subjects/{'x' * 129}/events",
        f"/v1/tenants/{a}/subjects/{'x' * 5000}/events", f"/v1/tenants/{a}/subjects/%FF/events",
        f"/v1/tenants/{a}/events/*", f"/v1/tenants/{a}/events/..%2F..%2Fx", f"/v1/tenants/{a}/events/{{x}}",
        "/v1/tenants/*/counts", "/v1/tenants/%7Bacme%7D/counts", "/v1/tenants/ACME/counts",
        f"/v1/tenants/{a}%0A/counts", "/v1/tenants/../tenants/x/counts", f"/v1/tenants/{'a' * 64}/counts",
        f"/v1/tenants/{a}/events?type=*", f"/v1/tenants/{a}/events?type=order_placed%0A",
        f"/v1/tenants/{a}/events?type=%7Bx%7D", f"/v1/tenants/{a}/events?type={'a' * 10000}",
        f"/v1/tenants/{a}/events?limit=%FF", f"/v1/tenants/{a}/events?start=1e9",
        f"/v1/tenants/{a}/events?offset=99999999999999999999999", f"/v1/tenants/{a}/counts?type=t:%7B{b}%7D:*",
    ]


def test_detokenize_roles_and_audit(api_env):
    s, base, a, b, events, tok, ids = api_env
    _, _, body = call(base, f"/v1/tenants/{a}/events/{events[0]['event_id']}", tok["a_reader"])
    token = body["event"]["event"]["email"]
    req = {"subject": "u-1", "token": token, "reason": "support ticket T-42"}
    path = f"/v1/tenants/{a}/detokenize"

    status, _, body = call(base, path, tok["a_reader"], "POST", req)
    assert status == 403 and EMAIL not in json.dumps(body)
    status, _, body = call(base, f"/v1/tenants/{b}/detokenize", tok["a_detok"], "POST", req)
    assert status == 403
    status, _, body = call(base, path, tok["a_detok"], "POST", {**req, "reason": ""})
    assert status == 400 and body["error"]["code"] == "invalid_body"
    status, _, body = call(base, path, tok["a_detok"], "POST", raw_body=b"{not json")
    assert status == 400
    status, _, body = call(base, path, tok["a_detok"], "POST", raw_body=b"x" * 100_000)
    assert status == 413
    status, _, body = call(base, path, tok["a_detok"], "POST", {**req, "subject": "u-2"})
    assert status == 422 and EMAIL not in json.dumps(body)

    status, hdrs, body = call(base, path, tok["a_detok"], "POST", req)
    assert status == 200 and body["value"] == EMAIL and hdrs["Cache-Control"] == "no-store"

    records = [r for _, r in read_all(s.kafka_bootstrap, s.audit_topic)]
    detok = [r for r in records if r.get("action") == "detokenize" and r.get("tenant") == a]
    assert [(r["actor"], r["details"]["outcome"]) for r in detok] == [
        (f"api:{ids['a_detok']}", "refused"), (f"api:{ids['a_detok']}", "ok")]
    assert detok[-1]["reason"] == "support ticket T-42" and detok[-1]["subject"].startswith("p_")
    # Denials are audited aggregated, by the worker's background flush (every STREAMS_API_DENIAL_AUDIT_WINDOW).
    want = {(ids["a_reader"], a, 403), (ids["a_detok"], b, 403)}

    def denied_records() -> list[dict[str, Any]] | None:
        recs = [r for _, r in read_all(s.kafka_bootstrap, s.audit_topic)]
        denied = {(r["details"]["key_id"], r["tenant"], r["details"]["status"]) for r in recs
                  if r.get("action") == "api.denied"}
        return recs if denied >= want else None

    records = wait_until(denied_records, timeout=s.api_denial_audit_window * 3 + 30, what="the denials' records")
    text = json.dumps(records)
    assert EMAIL not in text and token not in text and '"u-1"' not in text
    assert not any(v.split("_", 2)[2] in text for v in tok.values())
