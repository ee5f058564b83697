"""The route table is the one list of routes: the OpenAPI document and the handlers follow it."""

from __future__ import annotations

import inspect

from streams.api import control_handlers
from streams.api.handlers import DataHandlers
from streams.api.openapi import openapi_document
from streams.api.routes import METRICS_PATH, METRICS_ROUTE, OPENAPI_PATH, ROUTES, ROUTES_BY_NAME

# Served outside the table (Prometheus text; the document itself) and documented by openapi.py on its own.
_NOT_IN_TABLE = {("GET", METRICS_PATH), ("GET", OPENAPI_PATH)}


def test_every_route_of_the_table_is_documented_and_nothing_else():
    doc = openapi_document()
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    table = {(r.method, r.template) for r in ROUTES}
    assert table == documented - _NOT_IN_TABLE
    assert _NOT_IN_TABLE <= documented
    for r in ROUTES:
        assert doc["paths"][r.template][r.method.lower()]["operationId"] == r.name


def test_route_names_and_paths_are_unique():
    assert len(ROUTES_BY_NAME) == len(ROUTES)
    assert len({(r.method, r.template) for r in ROUTES}) == len(ROUTES)


def test_every_route_has_a_handler_of_its_kind():
    for r in ROUTES:
        assert r.handler is not None, r.name
        if r.control:
            assert inspect.getmodule(r.handler) is control_handlers, r.name
            assert list(inspect.signature(r.handler).parameters) == ["svc", "name", "request"], r.name
        else:
            assert getattr(DataHandlers, r.handler.__name__) is r.handler, r.name
            assert list(inspect.signature(r.handler).parameters) == ["self", "c"], r.name
    assert METRICS_ROUTE.handler is None and METRICS_ROUTE.name not in ROUTES_BY_NAME
