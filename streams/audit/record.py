"""The audit record's format rules: its fields, well-formedness, hash and authentication; pure logic, no I/O.

The format itself (each field and what it means) is described in
``streams.audit.chain``; ``streams.audit.verify`` checks whole trails with
these rules and ``streams.audit.chain.AuditChain`` refuses to write a record
they reject. Everything here is re-exported from ``streams.audit.chain``.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any, Mapping

from streams.audit.signing import PublicKey, canonical, is_kid, is_signature, is_writer
from streams.tenancy.names import is_valid_tenant_name

RECORD_VERSION = 2  # 2: signed (writer, kid, sig). Version 1 (unsigned) is refused: there was no production data.
GENESIS_PREV = "0" * 64
DEFAULT_TRAIL = "audit"  # the trail (audit topic) name a record is signed for, unless told otherwise
REQUIRED_FIELDS = frozenset({"v", "chain", "seq", "at_ms", "actor", "action", "tenant", "subject", "reason",
                             "details", "prev", "writer", "kid", "hash", "sig"})
OPTIONAL_FIELDS = frozenset({"anchor"})

MAX_TEXT = 1000  # actor, chain, reason, each detail value: audit records stay small
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
_PSEUDONYM_RE = re.compile(r"^p_[0-9a-f]{24}$")
_ACTION_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")


# ---------------------------------------------------------------- hash

def record_hash(record: Mapping[str, Any]) -> str:
    """Hex SHA-256 of the canonical bytes of ``record`` without its ``hash`` and ``sig`` fields."""
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k not in ("hash", "sig")})).hexdigest()


# ---------------------------------------------------------------- well-formedness

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _text_problem(name: str, v: Any, allow_empty: bool = False) -> str | None:
    if not isinstance(v, str):
        return f"{name} is not a string"
    if not v and not allow_empty:
        return f"{name} is empty"
    if len(v) > MAX_TEXT:
        return f"{name} is longer than {MAX_TEXT} characters"
    try:
        v.encode()
    except UnicodeEncodeError:
        return f"{name} is not valid text"
    return None


def _details_problem(details: Any) -> str | None:
    if not isinstance(details, dict):
        return "details is not an object"
    for k, v in details.items():
        if not isinstance(k, str) or not k or len(k) > 64:
            return "details has a key that is not a short string"
        if isinstance(v, str):
            if len(v) > MAX_TEXT:
                return f"details.{k} is longer than {MAX_TEXT} characters"
        elif isinstance(v, float):
            if not math.isfinite(v):
                return f"details.{k} is not a finite number"
        elif not (v is None or isinstance(v, (bool, int))):
            return f"details.{k} is not a string, number, boolean or null"
    return None


def _anchor_problem(anchor: Any) -> str | None:
    if not isinstance(anchor, dict) or set(anchor) != {"chain", "seq", "hash"}:
        return "anchor is not {chain, seq, hash}"
    if not isinstance(anchor["chain"], str) or not _is_int(anchor["seq"]) or anchor["seq"] < 0:
        return "anchor has a bad chain or seq"
    if not isinstance(anchor["hash"], str) or not _HASH_RE.match(anchor["hash"]):
        return "anchor hash is not 64 hex characters"
    return None


def malformed(record: Any) -> str | None:
    """Why ``record`` is not a well-formed audit record, or None when it is."""
    if not isinstance(record, dict):
        return "is not a JSON object"
    missing = REQUIRED_FIELDS - set(record)
    if missing:
        return f"lacks {', '.join(sorted(missing))}"
    extra = set(record) - REQUIRED_FIELDS - OPTIONAL_FIELDS
    if extra:
        return f"has unknown fields {', '.join(sorted(extra))}"
    if record["v"] != RECORD_VERSION or not _is_int(record["v"]):
        return f"has version {record['v']!r}, not {RECORD_VERSION}"
    for name in ("chain", "actor"):
        problem = _text_problem(name, record[name])
        if problem:
            return problem
    problem = _text_problem("reason", record["reason"], allow_empty=True)
    if problem:
        return problem
    if not isinstance(record["action"], str) or not _ACTION_RE.match(record["action"]):
        return "action is not a lowercase dotted name"
    if not _is_int(record["seq"]) or record["seq"] < 0:
        return "seq is not a non-negative integer"
    if not _is_int(record["at_ms"]) or record["at_ms"] < 0:
        return "at_ms is not a non-negative integer"
    if record["tenant"] is not None and not (isinstance(record["tenant"], str)
                                             and is_valid_tenant_name(record["tenant"])):
        return "tenant is not a tenant name"
    if record["subject"] is not None and not (isinstance(record["subject"], str)
                                              and _PSEUDONYM_RE.match(record["subject"])):
        return "subject is not a pseudonym"
    problem = _details_problem(record["details"])
    if problem:
        return problem
    for name in ("prev", "hash"):
        if not isinstance(record[name], str) or not _HASH_RE.match(record[name]):
            return f"{name} is not 64 lowercase hex characters"
    if not is_writer(record["writer"]):
        return "writer is not a writer id (<kind>:<name>)"
    if not is_kid(record["kid"]):
        return "kid is not 16 lowercase hex characters"
    if not is_signature(record["sig"]):
        return "sig is not a base64url Ed25519 signature"
    if "anchor" in record:
        if record["seq"] != 0:
            return "has an anchor but is not seq 0"
        problem = _anchor_problem(record["anchor"])
        if problem:
            return problem
    return None


# ---------------------------------------------------------------- authentication

def authentication_problem(record: Mapping[str, Any], keyring: Mapping[str, PublicKey], trail: str) -> str | None:
    """Why a well-formed record with a matching hash is not authentic, or None when its signature verifies.

    The record's ``kid`` must be in ``keyring``, belong to the record's ``writer``, and its public key
    must verify ``sig`` over the record and ``trail``.
    """
    key = keyring.get(record["kid"])
    if key is None:
        return f"is signed with key {record['kid']}, which is not in the keyring (unknown writer)"
    if key.writer != record["writer"]:
        return f"claims writer {record['writer']}, but key {key.kid} is writer {key.writer}'s"
    if not key.verifies(record, trail):
        return (f"has a signature that does not verify with key {key.kid} of writer {key.writer} "
                f"for trail {trail} (forged, or signed for another trail)")
    return None

