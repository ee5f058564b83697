"""The data API on the worker's Faust web server: a thin adapter from aiohttp requests to ``DataApi.handle``.

Every decision (auth, validation, status codes, bodies) is made in
``streams.api.service`` and the modules it calls; this module only routes, reads the body with a cap,
runs the blocking handler in a thread and writes the JSON response.

Rate limits (``DataApi.admit``, in memory) are checked here in the event
loop, in an aiohttp middleware: right after aiohttp matched the path, before
Faust's view dispatch (its sensors, the view object), before the body is read
and before the request takes one of the API's threads. A flood's refused
requests (429) never queue in front of other tenants' requests, touch Redis
or write the audit trail, and each costs the event loop as little as aiohttp
allows (measured in ``bench/api_flood_bench.py``: the worker's CPU per
refused request).

Routes are the aiohttp path templates of ``routes.ROUTES`` (one view per
path, with a handler per method: ``/v1/tenants`` takes GET and POST). A catch-all
``/v1/{rest:.*}``, registered last, answers what no route took with a JSON
404 (or a 405 when the path exists with another method), so every answer
under ``/v1`` has the same error shape. ``/openapi.json`` is served without
authentication, also while the worker starts. ``/metrics`` (Prometheus text)
answers operator keys only (``DataApi.authorize_metrics``; 503 while the
worker starts).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable, Type

import faust
from aiohttp import web as aiohttp_web
from aiohttp.http_exceptions import HttpProcessingError
from faust.web import View

from streams.api.openapi import openapi_document
from streams.api.params import MAX_BODY_BYTES
from streams.api.responses import ApiResponse, error_response
from streams.api.routes import METRICS_PATH, OPENAPI_PATH, ROUTES, Route, unmatched
from streams.api.service import DataApi

log = logging.getLogger(__name__)

# Own threads for the API's blocking calls (Redis, the audit's acknowledged appends, which can wait
# up to the audit timeout while the broker is away): a burst of API requests then queues here and
# never takes the default executor's threads from the pipeline (raw pruning, start-up).
API_THREADS = 8

_STARTING = error_response(503, "starting", "the worker is starting; retry shortly", {"Retry-After": "1"})


class _NoRequestDataInLogs(logging.Filter):
    """aiohttp logs a request it cannot parse (a URL over 8 KiB, a bad header) with a traceback whose
    message quotes the start of the URL, which may hold a subject id: keep one line with the error's
    name instead. The client still gets aiohttp's 400."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args, record.exc_info, record.exc_text = (
                "rejected an unparseable HTTP request (%s)", (type(exc).__name__,), None, None)
            # A client's mistake, not the server's error.
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True


def _quiet_aiohttp_parse_errors() -> None:
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _NoRequestDataInLogs) for f in logger.filters):
        logger.addFilter(_NoRequestDataInLogs())


def _respond(view: View, r: ApiResponse) -> Any:
    return view.json(r.body, status=r.status, headers=dict(r.headers))


async def _read_capped(request: Any, limit: int) -> bytes:
    """The body, but never more than ``limit + 1`` bytes: enough for the handler to answer 413."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await request.content.read(min(65536, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _limits_first(get_api: Callable[[], DataApi | None],
                  limited: dict[tuple[str, str], str]) -> Callable[..., Awaitable[Any]]:
    """The aiohttp middleware that answers 429 to an over-limit caller before anything else is done for it.

    aiohttp runs middlewares after it matched the path (``request.match_info``), so the route and its path
    parameters are known, and before the handler: no Faust view, no sensor, no body read, no thread, no
    Redis. Requests of other paths (and of the API while the worker starts) go on untouched."""

    @aiohttp_web.middleware
    async def limits_first(request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        api = get_api()
        if api is not None:
            info = request.match_info
            resource = info.route.resource
            method = "GET" if request.method == "HEAD" else request.method
            name = limited.get((method, resource.canonical)) if resource is not None else None
            if name is not None:
                refused = api.admit(name, info, request.headers, request.remote)
                if refused is not None:
                    return aiohttp_web.Response(body=json.dumps(refused.body).encode(), status=refused.status,
                                                headers=refused.headers, content_type="application/json")
        return await handler(request)

    return limits_first


def register_api(app: faust.App, get_api: Callable[[], DataApi | None],
                 render_metrics: Callable[[], str] | None = None, metrics_type: str = "text/plain") -> None:
    """Add the data API's pages to ``app``, and ``/metrics`` when ``render_metrics`` is given (its text
    served as ``metrics_type``). ``get_api()`` is None until the worker's runtime exists (503)."""
    executor = ThreadPoolExecutor(max_workers=API_THREADS, thread_name_prefix="streams-api")
    _quiet_aiohttp_parse_errors()

    async def dispatch(view: View, route: Route, request: Any, params: dict[str, str]) -> Any:
        api = get_api()
        if api is None:
            return _respond(view, _STARTING)
        try:
            # The limits were checked by the middleware (limits_first) before this view was reached.
            body = await _read_capped(request, MAX_BODY_BYTES) if route.has_body else b""
            query = list(request.query.items())  # pairs: a repeated parameter must stay visible (400)
            resp = await asyncio.get_running_loop().run_in_executor(
                executor, functools.partial(api.handle, request.method, route.name, params, query, request.headers,
                                            body, client=request.remote))
        except Exception as exc:  # the handler never raises; this is the adapter failing (a closed connection)
            log.warning("api %s: request failed in the web layer (%s)", route.name, type(exc).__name__)
            resp = error_response(500, "internal_error", "internal error")
        return _respond(view, resp)

    def handler_for(route: Route) -> Callable[..., Any]:
        async def handler(self: View, request: Any, **params: str) -> Any:
            return await dispatch(self, route, request, params)

        return handler

    def view_for(routes: list[Route]) -> Type[View]:
        # One View per path, implementing exactly the methods of its routes (a second View on the same
        # path would register HEAD twice, which aiohttp refuses): aiohttp then routes other methods on
        # this path to the catch-all below, which answers 405. HEAD is GET (View.head calls get).
        methods = {r.method.lower(): handler_for(r) for r in routes}
        return type(f"Api_{routes[0].name}", (View,), {**methods, "__doc__": "; ".join(r.summary for r in routes)})

    by_path: dict[str, list[Route]] = {}
    for route in ROUTES:
        by_path.setdefault(route.template, []).append(route)
    # (method, path template) -> the name DataApi.admit knows the route by; HEAD is GET.
    limited: dict[tuple[str, str], str] = {(r.method, r.template): r.name for r in ROUTES}
    if render_metrics is not None:
        limited[("GET", METRICS_PATH)] = "metrics"
    app.web.web_app.middlewares.append(_limits_first(get_api, limited))
    for template, routes in by_path.items():
        app.page(template, name=f"api_{routes[0].name}")(view_for(routes))

    app.page("/v1/{rest:.*}", name="api_not_found")(ApiNotFound)
    if render_metrics is not None:
        _register_metrics(app, get_api, executor, render_metrics, metrics_type)

    @app.page(OPENAPI_PATH, name="api_openapi")
    async def openapi(web: View, request: Any) -> Any:
        return web.json(openapi_document())


class ApiNotFound(View):
    """Anything under /v1 that no route took: a JSON 404, or 405 when the path exists with another method."""

    async def _unmatched(self, request: Any, **_: str) -> Any:
        return _respond(self, unmatched(request.method, request.path))

    get = post = put = patch = delete = _unmatched


def _register_metrics(app: faust.App, get_api: Callable[[], DataApi | None], executor: ThreadPoolExecutor,
                      render_metrics: Callable[[], str], metrics_type: str) -> None:
    """``/metrics``: Prometheus text for operator keys (``DataApi.authorize_metrics`` in an API thread)."""

    @app.page(METRICS_PATH, name="metrics")
    async def metrics_view(web: View, request: Any) -> Any:
        api = get_api()
        if api is None:
            return _respond(web, _STARTING)
        denied = await asyncio.get_running_loop().run_in_executor(
            executor, api.authorize_metrics, dict(request.headers), request.remote)
        if denied is not None:
            return _respond(web, denied)
        # Rendered in an API thread: the process collector reads /proc.
        text = await asyncio.get_running_loop().run_in_executor(executor, render_metrics)
        return web.text(text, content_type=metrics_type, headers={"Cache-Control": "no-store"})
