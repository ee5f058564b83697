"""Adding a privacy request type is one class plus one registration line (README "Extending:
adding a privacy request type"), shown with a test-only type.

``restrict_ml`` (not a built-in): the subject objects to model training only. It revokes the
``ml_training`` purpose without naming a purpose, and erases nothing. Registered in a fixture,
it is filed, validated, serialized, applied and decided like a built-in, and the CLI, the API
body check and the OpenAPI document offer it, with no other file changed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterator

import pytest

from streams.api.openapi import openapi_document
from streams.api.params import parse_privacy_body
from streams.api.responses import ApiError
from streams.cli.main import build_parser
from streams.consent import request_types
from streams.consent.exceptions import InvalidRequest
from streams.consent.request_types import RequestKind
from streams.consent.requests import new_request, parse
from streams.consent.state import DropReason, Regime, SubjectState, apply, decide


class RestrictMl(RequestKind):
    name = "restrict_ml"
    doc = "no model training on the subject's events; other purposes go on"

    def apply(self, state: SubjectState, req) -> SubjectState:
        return replace(state, granted=state.granted - {"ml_training"}, revoked=state.revoked | {"ml_training"})


@pytest.fixture
def restrict_ml() -> Iterator[RequestKind]:
    kind = request_types.register(RestrictMl())
    yield kind
    request_types.unregister(kind.name)


def test_the_builtins_in_their_documented_order():
    assert request_types.names()[:6] == ("grant", "revoke", "opt_out", "opt_in", "erase", "erase_and_suppress")
    assert {k.name for k in request_types.kinds() if k.erases} == {"erase", "erase_and_suppress"}


def test_an_unregistered_type_is_invalid_never_another_type():
    with pytest.raises(InvalidRequest, match="type must be one of"):
        new_request("restrict_ml", "acme", "u-1", "test")


def test_a_registered_type_is_filed_parsed_applied_and_decided(restrict_ml):
    req = new_request("restrict_ml", "acme", "u-1", "test")
    assert req.type is restrict_ml and parse(req.to_json()) == req
    with pytest.raises(InvalidRequest, match="takes no purpose"):
        new_request("restrict_ml", "acme", "u-1", "test", purpose="analytics")
    state = apply(SubjectState(granted=frozenset({"ml_training", "analytics"})), req)
    assert state.last_request == req.request_id and apply(state, req) == state  # a replay changes nothing
    assert decide(state, "ml_training", Regime.OPT_OUT) is DropReason.CONSENT_REVOKED
    assert decide(state, "analytics", Regime.OPT_IN) is None


def test_the_cli_the_api_and_the_openapi_document_offer_it(restrict_ml):
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    privacy = sub.choices["privacy"]
    assert "restrict_ml" in next(a for a in privacy._actions if a.dest == "type").choices
    assert restrict_ml.doc in privacy.description
    assert parse_privacy_body(b'{"type": "restrict_ml", "subject": "u-1"}')["type"] == "restrict_ml"
    schemas = openapi_document()["components"]["schemas"]
    assert "restrict_ml" in schemas["PrivacyRequest"]["properties"]["type"]["enum"]


def test_the_api_refuses_it_once_unregistered():
    with pytest.raises(ApiError):
        parse_privacy_body(b'{"type": "restrict_ml", "subject": "u-1"}')
    assert "restrict_ml" not in openapi_document()["components"]["schemas"]["PrivacyRequest"]["properties"]["type"]["enum"]


def test_register_refuses_a_taken_or_malformed_name(restrict_ml):
    with pytest.raises(ValueError, match="registered already"):
        request_types.register(RestrictMl())
    with pytest.raises(ValueError, match="built-in"):
        request_types.unregister("erase")

    class Bad(RequestKind):
        name = "Bad-Name"
        doc = "x"
    with pytest.raises(ValueError, match="lower-case"):
        request_types.register(Bad())
