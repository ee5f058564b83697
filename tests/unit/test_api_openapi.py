"""The OpenAPI document: valid 3.0, every route and parameter present with the constraints validation applies."""

from __future__ import annotations

import json
import re

import pytest

from streams.api.openapi import openapi_document
from streams.api.routes import OPENAPI_PATH, ROUTES


def test_document_is_valid_openapi_30():
    doc = openapi_document()
    assert doc["openapi"].startswith("3.0")
    json.dumps(doc)  # served as JSON
    try:
        import openapi_spec_validator
    except ImportError:
        openapi_spec_validator = None
    if openapi_spec_validator is not None:
        openapi_spec_validator.validate(doc)
    else:  # the test extra installs schemathesis, which validates against the OpenAPI 3.0 meta-schema too
        schemathesis = pytest.importorskip("schemathesis")
        schemathesis.openapi.from_dict(doc).validate()


def test_every_route_is_documented_with_its_parameters_and_constraints():
    doc = openapi_document()
    for r in ROUTES:
        op = doc["paths"][r.template][r.method.lower()]
        assert op["operationId"] == r.name
        documented = {(p["name"], p["in"]): p for p in op["parameters"]}
        for spec in r.path_params + r.query_params:
            p = documented.pop((spec.name, spec.location))
            schema = p["schema"]
            assert p["required"] is spec.required
            if spec.kind == "integer":
                assert (schema["type"], schema["minimum"], schema["maximum"]) == ("integer", spec.minimum,
                                                                                  spec.maximum)
            else:
                assert schema["type"] == "string" and schema["pattern"] == spec.pattern
                assert (schema["minLength"], schema["maxLength"]) == (spec.min_length, spec.max_length)
                re.compile(schema["pattern"])
        assert not documented, f"{r.name} documents parameters it does not take: {documented}"
        ok_status = {"tenants_create": "201", "privacy_request": "202"}.get(r.name, "200")
        for status in (ok_status, "400", "401", "403", "429", "503"):
            assert status in op["responses"], (r.name, status)
        for status, resp in op["responses"].items():
            if status not in ("200", "201", "202"):
                assert resp["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
        assert "WWW-Authenticate" in op["responses"]["401"]["headers"]
        assert "Retry-After" in op["responses"]["429"]["headers"]
    assert "429" in doc["paths"]["/metrics"]["get"]["responses"]
    assert "404" in doc["paths"]["/v1/tenants/{tenant}/events/{event_id}"]["get"]["responses"]
    assert doc["paths"]["/v1/tenants/{tenant}/detokenize"]["post"]["requestBody"]["required"] is True


def test_security_is_bearer_and_the_document_itself_is_public():
    doc = openapi_document()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {"type": "http", "scheme": "bearer", "bearerFormat": "stk_<key id>_<secret>"}
    assert {"bearerAuth": []} in doc["security"]
    assert doc["paths"][OPENAPI_PATH]["get"]["security"] == []


def test_copies_are_independent():
    a = openapi_document()
    a["paths"].clear()
    assert openapi_document()["paths"]


def test_the_control_routes_are_documented_for_operator_keys():
    doc = openapi_document()
    create = doc["paths"]["/v1/tenants"]["post"]
    assert create["requestBody"]["required"] is True
    body = doc["components"]["schemas"]["TenantCreateRequest"]
    assert body["required"] == ["name"] and body["additionalProperties"] is False
    assert body["properties"]["roles"]["items"]["enum"] == ["reader", "detokenizer", "privacy"]
    assert set(create["responses"]) >= {"200", "201", "400", "401", "403", "409", "413", "502", "503"}
    assert "Location" in create["responses"]["201"]["headers"]
    delete = doc["paths"]["/v1/tenants/{tenant}"]["delete"]
    [confirm] = [p for p in delete["parameters"] if p["in"] == "query"]
    assert confirm["name"] == "confirm" and confirm["required"] is True
    for path, method in [("/v1/tenants", "get"), ("/v1/tenants", "post"), ("/v1/tenants/{tenant}", "get"),
                         ("/v1/tenants/{tenant}", "delete"), ("/v1/tenants/{tenant}/rotate-credentials", "post")]:
        op = doc["paths"][path][method]
        assert "operator" in op["responses"]["403"]["description"]
        assert "security" not in op  # the document's: an API key (an operator's) is required
    for path, method in [("/v1/tenants/{tenant}", "get"), ("/v1/tenants/{tenant}", "delete"),
                         ("/v1/tenants/{tenant}/rotate-credentials", "post")]:
        assert "404" in doc["paths"][path][method]["responses"]
    receipt = doc["components"]["schemas"]["DeletionReceipt"]
    assert {"receipt_id", "requested_by", "steps"} <= set(receipt["required"])
