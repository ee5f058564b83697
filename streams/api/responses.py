"""What every API answer is made of: ``ApiResponse``, the JSON error body and ``ApiError``.

In a module of its own, with no other ``streams`` import, so that handlers,
checks and the web adapter share one error shape without importing each
other. Error bodies are ``{"error": {"code": ..., "message": ...}}``; messages
name the parameter and the rule, never echo the value sent (it may be personal
data or an injection attempt).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class ApiResponse:
    """A status, a JSON body and headers, free of any web framework (``faust_views`` converts it)."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


# Responses hold tenant data (and detokenized values): never cache them anywhere.
_COMMON_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> ApiResponse:
    """The error body every failure answers, with the no-cache headers."""
    return ApiResponse(status, {"error": {"code": code, "message": message}}, {**_COMMON_HEADERS, **(headers or {})})


def ok(body: dict[str, Any], status: int = 200, headers: Mapping[str, str] | None = None) -> ApiResponse:
    """A success with the no-cache headers (bodies hold tenant data)."""
    return ApiResponse(status, body, {**_COMMON_HEADERS, **(headers or {})})


class ApiError(Exception):
    """Raised inside request handling; becomes an error response (its message is safe to show)."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.response = error_response(status, code, message, headers)
