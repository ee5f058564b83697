"""The request parameters' rules (``ParamSpec``) and the request bodies' parsers: every check on what a caller sends.

One ``ParamSpec`` drives both validation here and the parameter's schema in
the OpenAPI document (``streams.api.openapi``), so the two cannot drift
apart. Every check runs before anything reaches Redis: strict patterns (no
glob characters, braces, control characters, ``..``), bounded lengths and
integer ranges; unknown or repeated query parameters are refused, not ignored.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from streams.api.responses import ApiError
from streams.consent import request_types
from streams.consent.requests import PURPOSES
from streams.privacy.detokenize import MAX_REASON

# ---------------------------------------------------------------- limits

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# Offsets are bounded so offset + limit always fits Redis' 64-bit ranges (a larger one is a 400, not a 500).
MAX_OFFSET = 1_000_000_000
# Event times: ms since the epoch up to the end of year 9999 (exact in a Redis double score).
MAX_TIME_MS = 253_402_300_799_999
MAX_BODY_BYTES = 16 * 1024
MAX_TOKEN_CHARS = 4096
MIN_REASON = 3
MAX_REQUEST_REASON = 200  # streams.consent.requests' limit
PRIVACY_FIELDS = ("type", "subject", "purpose", "reason")

Query = Mapping[str, str] | Iterable[tuple[str, str]]

# ---------------------------------------------------------------- parameters


@dataclass(frozen=True)
class ParamSpec:
    """One path or query parameter: its rule, used for validation here and for the OpenAPI schema."""

    name: str
    location: str  # "path" | "query"
    kind: str  # "string" | "integer"
    description: str
    pattern: str | None = None  # anchored ^...$, ECMA-262 compatible (OpenAPI) and Python re
    min_length: int | None = None
    max_length: int | None = None
    minimum: int | None = None
    maximum: int | None = None
    default: int | None = None
    mandatory: bool = False  # a query parameter that must be given (path parameters always are)

    @property
    def required(self) -> bool:
        return self.location == "path" or self.mandatory

    def rule(self) -> str:
        if self.kind == "integer":
            return f"an integer from {self.minimum} to {self.maximum}"
        return f"{self.min_length}-{self.max_length} characters matching {self.pattern}"

    def parse(self, raw: str) -> Any:
        """The validated value of ``raw``; ApiError 400 naming the parameter and its rule otherwise."""
        where = "path parameter" if self.location == "path" else "query parameter"
        bad = ApiError(400, "invalid_parameter", f"{where} '{self.name}' must be {self.rule()}")
        if not isinstance(raw, str):
            raise bad
        if self.kind == "integer":
            # ASCII digits only: int() would also take ' 12', '1_000' and non-ASCII digits.
            if not _INT_RE.fullmatch(raw):
                raise bad
            value = int(raw)
            if not (self.minimum <= value <= self.maximum):  # type: ignore[operator]
                raise bad
            return value
        if not (self.min_length or 0) <= len(raw) <= (self.max_length or 0):
            raise bad  # the length first: no regex ever runs over a huge value
        if self.pattern and not re.fullmatch(self.pattern, raw):
            raise bad
        return raw


_INT_RE = re.compile(r"[0-9]{1,16}")

TENANT = ParamSpec(
    "tenant", "path", "string", "The tenant's name (the key must belong to it).",
    # The rule of streams.tenancy.names (checked there too, and a unit test keeps them equal).
    pattern=r"^[a-z][a-z0-9-]{0,62}$", min_length=1, max_length=63)
SUBJECT = ParamSpec(
    "subject", "path", "string",
    "The tenant's opaque subject id, as in the clean events' subject_id. Ids made only of dots are refused: "
    "'.' and '..' are path segments that clients and proxies rewrite.",
    # The ingest rule ([A-Za-z0-9._:-]{1,128}) with at least one character that is not a dot;
    # written without look-ahead so every OpenAPI tool can use it.
    pattern=r"^[A-Za-z0-9._:-]*[A-Za-z0-9_:-][A-Za-z0-9._:-]*$", min_length=1, max_length=128)
EVENT_ID = ParamSpec(
    "event_id", "path", "string", "The event's id (a UUID, any case).",
    pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
    min_length=36, max_length=36)
TYPE = ParamSpec(
    "type", "query", "string", "An event type such as customer_signup or order_placed.",
    pattern=r"^[a-z][a-z0-9_]{0,63}$", min_length=1, max_length=64)
LIMIT = ParamSpec("limit", "query", "integer", "Page size.", minimum=1, maximum=MAX_LIMIT, default=DEFAULT_LIMIT)
OFFSET = ParamSpec("offset", "query", "integer", "Events to skip (from the paging object's next_offset).",
                   minimum=0, maximum=MAX_OFFSET, default=0)
START = ParamSpec("start", "query", "integer", "Earliest event time, ms since the epoch (inclusive).",
                  minimum=0, maximum=MAX_TIME_MS)
END = ParamSpec("end", "query", "integer", "Latest event time, ms since the epoch (inclusive).",
                minimum=0, maximum=MAX_TIME_MS)
REQUEST_ID = ParamSpec(
    "request_id", "path", "string", "The privacy request's id, as the filing answered it.",
    pattern=r"^r-[0-9a-f]{32}$", min_length=34, max_length=34)
# The same rule on the control routes, where the key (an operator's) belongs to no tenant.
MANAGED_TENANT = dataclasses.replace(TENANT, description="The tenant's name.")
CONFIRM = ParamSpec(
    "confirm", "query", "string",
    "The tenant's name again: deleting erases every event, key and credential of the tenant, so a DELETE "
    "without this confirmation changes nothing.",
    pattern=TENANT.pattern, min_length=TENANT.min_length, max_length=TENANT.max_length, mandatory=True)


def parse_query(query_params: tuple[ParamSpec, ...], query: Query) -> dict[str, Any]:
    """Validated query values with defaults. Unknown or repeated parameters are 400, not ignored:
    a typo ('limt') must not silently return the default page."""
    pairs = list(query.items()) if isinstance(query, Mapping) else list(query)
    specs = {p.name: p for p in query_params}
    seen: set[str] = set()
    out: dict[str, Any] = {p.name: p.default for p in query_params if p.default is not None}
    for name, raw in pairs:
        spec = specs.get(name)
        if spec is None:
            allowed = ", ".join(specs) or "none"
            raise ApiError(400, "invalid_parameter", f"unknown query parameter; this route takes: {allowed}")
        if name in seen:
            raise ApiError(400, "invalid_parameter", f"query parameter '{name}' given more than once")
        seen.add(name)
        out[name] = spec.parse(raw)
    for spec in query_params:
        if spec.mandatory and spec.name not in seen:
            raise ApiError(400, "invalid_parameter", f"query parameter '{spec.name}' is required: {spec.description}")
    return out


def parse_detokenize_body(body: bytes) -> dict[str, str]:
    """``{"subject", "token", "reason"}`` validated; ApiError 400/413 saying what is wrong (no values)."""
    if len(body) > MAX_BODY_BYTES:
        raise ApiError(413, "payload_too_large", f"the body is limited to {MAX_BODY_BYTES} bytes")
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_body", 'the body must be a JSON object {"subject", "token", "reason"}') from None
    if not isinstance(obj, dict) or set(obj) != {"subject", "token", "reason"}:
        raise ApiError(400, "invalid_body", 'the body must be a JSON object with exactly "subject", "token" and '
                                            '"reason"')
    subject = obj["subject"]
    if not isinstance(subject, str):
        raise ApiError(400, "invalid_body", f"'subject' must be {SUBJECT.rule()}")
    try:
        SUBJECT.parse(subject)
    except ApiError:
        raise ApiError(400, "invalid_body", f"'subject' must be {SUBJECT.rule()}") from None
    token = obj["token"]
    if not isinstance(token, str) or not 1 <= len(token) <= MAX_TOKEN_CHARS:
        raise ApiError(400, "invalid_body", f"'token' must be a string of 1-{MAX_TOKEN_CHARS} characters")
    reason = obj["reason"]
    if (not isinstance(reason, str) or not MIN_REASON <= len(reason.strip()) <= MAX_REASON
            or any(ord(c) < 32 or ord(c) == 127 for c in reason)):
        # Control characters are refused: the reason is kept in the audit trail and shown in reports.
        raise ApiError(400, "invalid_body", f"'reason' must say why the value is needed: {MIN_REASON}-{MAX_REASON} "
                                            "characters, no control characters (kept in the audit trail; no "
                                            "personal data)")
    return {"subject": subject, "token": token, "reason": reason.strip()}


def parse_privacy_body(body: bytes) -> dict[str, Any]:
    """``{"type", "subject", "purpose"?, "reason"?}`` validated; ApiError 400/413 saying what is wrong (no values)."""
    if len(body) > MAX_BODY_BYTES:
        raise ApiError(413, "payload_too_large", f"the body is limited to {MAX_BODY_BYTES} bytes")
    types = ", ".join(request_types.names())
    shape = (f'the body must be a JSON object {{"type": one of {types}, "subject": <subject id>, "purpose": '
             f'(grant and revoke only) one of {", ".join(PURPOSES)}, "reason": (optional)}}')
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "invalid_body", shape) from None
    if not isinstance(obj, dict) or "type" not in obj or "subject" not in obj:
        raise ApiError(400, "invalid_body", shape)
    if set(obj) - set(PRIVACY_FIELDS):
        raise ApiError(400, "invalid_body", f"unknown member in the body; the members are: {', '.join(PRIVACY_FIELDS)}")
    type_ = obj["type"]
    if not isinstance(type_, str) or request_types.kind(type_) is None:
        raise ApiError(400, "invalid_body", f"'type' must be one of: {types}")
    subject = obj["subject"]
    try:
        SUBJECT.parse(subject)
    except ApiError:
        raise ApiError(400, "invalid_body", f"'subject' must be {SUBJECT.rule()}") from None
    purpose = obj.get("purpose")
    if purpose is not None and (not isinstance(purpose, str) or purpose not in PURPOSES):
        raise ApiError(400, "invalid_body", f"'purpose' must be one of: {', '.join(PURPOSES)}")
    reason = obj.get("reason", "")
    if (not isinstance(reason, str) or len(reason) > MAX_REQUEST_REASON
            or any(ord(c) < 32 or ord(c) == 127 for c in reason)):
        raise ApiError(400, "invalid_body", f"'reason' must be at most {MAX_REQUEST_REASON} characters, no control "
                                            "characters (kept in the audit trail; no personal data)")
    return {"type": type_, "subject": subject, "purpose": purpose, "reason": reason.strip()}
