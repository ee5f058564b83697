"""Privacy requests: what a privacy officer files on ``privacy.requests``.

A request is a JSON object keyed ``<tenant>/<subject>`` like the raw events,
so it lands on the same partition as the subject's events:

    {"v": 1, "request_id": "r-…", "type": "erase", "tenant": "acme", "subject": "u-1001",
     "purpose": null, "filed_at_ms": 1795550000000, "actor": "cli:alice", "reason": "ticket 88"}

Types (``streams.consent.request_types``, one class each, registered by name):
``grant`` and ``revoke`` (consent for one purpose), ``opt_out`` and
``opt_in`` (all processing), ``erase`` (delete everything now; later events
are blocked until the subject opts in again) and ``erase_and_suppress``
(the same, and an opt-in can never lift the block).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from streams.consent import request_types
from streams.consent.exceptions import InvalidRequest
from streams.consent.request_types import RequestKind
from streams.tenancy.names import is_valid_tenant_name

PURPOSES = ("analytics", "ml_training", "marketing", "customer_support")
_SUBJECT_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_REQUEST_ID_RE = re.compile(r"r-[0-9a-f]{32}")


@dataclass(frozen=True)
class PrivacyRequest:
    request_id: str
    type: RequestKind
    tenant: str
    subject: str
    purpose: str | None
    filed_at_ms: int
    actor: str
    reason: str = ""

    @property
    def key(self) -> bytes:
        return f"{self.tenant}/{self.subject}".encode()

    def to_json(self) -> bytes:
        d = asdict(self)
        d["type"] = self.type.name
        d["v"] = 1
        return json.dumps(d, separators=(",", ":")).encode()


def new_request(type_: str, tenant: str, subject: str, actor: str, purpose: str | None = None,
                reason: str = "") -> PrivacyRequest:
    """Build and validate a request; raises InvalidRequest saying what is wrong."""
    return validate({"request_id": f"r-{uuid.uuid4().hex}", "type": type_, "tenant": tenant, "subject": subject,
                     "purpose": purpose, "filed_at_ms": int(time.time() * 1000), "actor": actor,
                     "reason": reason})


def validate(obj: Any) -> PrivacyRequest:
    if not isinstance(obj, dict):
        raise InvalidRequest("a request is a JSON object")
    type_ = request_types.kind(obj.get("type"))
    if type_ is None:
        raise InvalidRequest(f"type must be one of {', '.join(request_types.names())}")
    tenant, subject, purpose = obj.get("tenant"), obj.get("subject"), obj.get("purpose")
    if not isinstance(tenant, str) or not is_valid_tenant_name(tenant):
        raise InvalidRequest("tenant must be a tenant name")
    if not isinstance(subject, str) or not _SUBJECT_RE.fullmatch(subject):
        raise InvalidRequest("subject must be 1-128 of [A-Za-z0-9._:-]")
    if type_.needs_purpose:
        if purpose not in PURPOSES:
            raise InvalidRequest(f"{type_.name} needs a purpose, one of {', '.join(PURPOSES)}")
    elif purpose is not None:
        raise InvalidRequest(f"{type_.name} takes no purpose")
    request_id = obj.get("request_id")
    if not isinstance(request_id, str) or not _REQUEST_ID_RE.fullmatch(request_id):
        raise InvalidRequest("request_id must be r-<32 hex>")
    filed = obj.get("filed_at_ms")
    if not isinstance(filed, int) or isinstance(filed, bool) or filed <= 0:
        raise InvalidRequest("filed_at_ms must be epoch milliseconds")
    actor, reason = obj.get("actor"), obj.get("reason", "")
    if not isinstance(actor, str) or not actor or len(actor) > 100:
        raise InvalidRequest("actor must be a non-empty string (at most 100 characters)")
    if not isinstance(reason, str) or len(reason) > 200:
        raise InvalidRequest("reason must be a string of at most 200 characters")
    return PrivacyRequest(request_id, type_, tenant, subject, purpose, filed, actor, reason)


def parse(value: bytes | None) -> PrivacyRequest:
    if value is None:
        raise InvalidRequest("empty request")
    try:
        obj = json.loads(value)
    except (ValueError, RecursionError):
        raise InvalidRequest("not JSON") from None
    return validate(obj)
