"""A worker's /metrics page as an operator scrapes it, parsed with prometheus_client's own parser
(so the exposition format is checked on every read)."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Callable

import redis
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from streams.api.api_keys import ApiKeyStore, Role
from streams.settings import Settings


def operator_token(s: Settings) -> str:
    """A new operator key (only operators read /metrics: it names every tenant and its volume)."""
    _, token = ApiKeyStore(redis.Redis.from_url(s.redis_url)).create(None, Role.OPERATOR, "metrics")
    return token


def scrape_text(port: int, token: str) -> str:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers["Content-Type"]
        return r.read().decode()


def samples(text: str) -> list[Sample]:
    return [x for fam in text_string_to_metric_families(text) for x in fam.samples]


def value(page: list[Sample], name: str, **labels: str) -> float | None:
    """The sample ``name`` with exactly ``labels``, or None."""
    return next((x.value for x in page if x.name == name and x.labels == labels), None)


def scrape_until(port: int, token: str, ok: Callable[[list[Sample]], bool], timeout: float = 20.0) -> list[Sample]:
    """Scrape until ``ok(samples)`` (the page as it then is, either way). A worker still starting
    answers 503: asked again."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            page = samples(scrape_text(port, token))
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or time.monotonic() > deadline:
                raise
            page = []
        if page and ok(page) or time.monotonic() > deadline:
            return page
        time.sleep(0.3)
