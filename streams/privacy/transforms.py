"""Applying the schema's privacy policy to an event: the raw datum in, the clean datum out.

Pure functions of (datum, rules, subject key). Tokens and hashes are keyed by
the subject's own key (``streams.privacy.keys``), so destroying that key
(erasure) makes every token of the subject irreversible and every hash
unlinkable at once, wherever copies of them went.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
from typing import Any, Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from streams.privacy.exceptions import PolicyError, PrivacyError, TokenError
from streams.privacy.policy import FieldRule

TOKEN_PREFIX = "tok"
HASH_PREFIX = "hash"
_TOKEN_RE = re.compile(r"tok\.([a-z_]{1,32})\.([A-Za-z0-9_-]{20,})")
_EPOCH_DATE = dt.date(1970, 1, 1)


class TransformFailed(PrivacyError):
    """A transform raised on one event's field (a poison event).

    Names the field, the transform and the error's type, never the error's text: that
    can quote the value (UnicodeEncodeError does), and the value is personal data.
    """

    def __init__(self, field: str, transform: str, error: str) -> None:
        self.field = field
        self.transform = transform
        self.error = error
        super().__init__(f"{error} in the {transform} transform of field '{field}'")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SubjectCipher:
    """Tokenize, detokenize and hash with one subject's key (built once per subject and batch)."""

    __slots__ = ("_siv", "_mac_key")

    def __init__(self, subject_key: bytes) -> None:
        # Separate keys for the two jobs, derived from the one subject key (which erasure destroys).
        okm = HKDF(algorithm=hashes.SHA256(), length=96, salt=None, info=b"streams.subject-key.v1").derive(subject_key)
        self._siv = AESSIV(okm[:64])
        self._mac_key = okm[64:]

    def __repr__(self) -> str:
        return "SubjectCipher(<key hidden>)"

    def tokenize(self, kind: str, value: str) -> str:
        # AES-SIV is deterministic: the same value of the same subject gives the same token, so
        # analysts can join and count within a subject; the kind is authenticated data.
        return f"{TOKEN_PREFIX}.{kind}.{_b64(self._siv.encrypt(value.encode(), [kind.encode()]))}"

    def detokenize(self, token: str) -> tuple[str, str]:
        """Return (kind, value); raises TokenError for a malformed token or another subject's token."""
        m = _TOKEN_RE.fullmatch(token)
        if not m:
            raise TokenError("not a token (expected tok.<kind>.<data>)")
        kind, data = m.group(1), m.group(2)
        try:
            return kind, self._siv.decrypt(_unb64(data), [kind.encode()]).decode()
        except (InvalidTag, ValueError):
            raise TokenError("token does not belong to this subject's key") from None

    def hash(self, kind: str, value: str) -> str:
        digest = hmac.new(self._mac_key, kind.encode() + b"\0" + value.encode(), hashlib.sha256).hexdigest()
        return f"{HASH_PREFIX}.{kind}.{digest[:32]}"


def token_kind(token: str) -> str | None:
    m = _TOKEN_RE.fullmatch(token)
    return m.group(1) if m else None


def mask(kind: str, value: str) -> str:
    """Keep the documented part (policy.MASKS) and star the rest; never more than that part."""
    if kind == "email":
        _, at, domain = value.rpartition("@")
        return f"***@{domain}" if at and domain else "***"
    if kind == "phone":
        digits = [c for c in value if c.isdigit()]
        return "***" + "".join(digits[-2:]) if len(digits) >= 6 else "***"
    if kind == "postal_code":
        return value[:2] + "***" if len(value) >= 4 else "***"
    if kind == "ip_address":
        parts = value.split(".")
        return ".".join(parts[:2] + ["*", "*"]) if len(parts) == 4 else "***"
    raise PolicyError(f"no mask for kind '{kind}'")


def generalize(value: Any) -> Any:
    """A date -> its year; a timestamp -> its day (as an Avro date)."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc).date()
    if isinstance(value, dt.date):
        return value.year
    raise PolicyError("generalize needs a date or timestamp")


def _field_fn(rule: FieldRule, cipher: SubjectCipher) -> Callable[[Any], Any]:
    kind = rule.kind
    if rule.transform == "tokenize":
        return lambda v: cipher.tokenize(kind, v)
    if rule.transform == "hash":
        return lambda v: cipher.hash(kind, v)
    if rule.transform == "mask":
        return lambda v: mask(kind, v)
    if rule.transform == "redact":
        return lambda v: None if rule.nullable else ""
    return generalize


class PolicyApplier:
    """Applies one schema's rules. Built once per schema; ``apply`` per event."""

    def __init__(self, rules: list[FieldRule]) -> None:
        self.rules = rules
        # path -> rule, split into segments once; "[]" marks an array level.
        self._plans = [(rule, rule.path.split(".")) for rule in rules]

    def apply(self, datum: dict[str, Any], cipher: SubjectCipher) -> dict[str, Any]:
        """Transform every annotated field of ``datum`` in place (the caller owns the freshly
        decoded datum; copying it first was measurable) and return it."""
        for rule, segments in self._plans:
            try:
                _transform_at(datum, segments, _field_fn(rule, cipher), rule.nullable)
            except Exception as exc:  # one event's value, not the pipeline: the caller sends it to the DLQ
                raise TransformFailed(rule.path, rule.transform, type(exc).__name__) from None
        return datum


def _transform_at(node: Any, segments: list[str], fn: Callable[[Any], Any], nullable: bool) -> None:
    seg = segments[0]
    if seg.endswith("[]"):
        items = node.get(seg[:-2]) if isinstance(node, dict) else None
        for item in items or []:
            _transform_at(item, segments[1:], fn, nullable)
        return
    if not isinstance(node, dict) or seg not in node:
        return
    if len(segments) == 1:
        value = node[seg]
        if value is not None:
            node[seg] = fn(value)
        return
    _transform_at(node[seg], segments[1:], fn, nullable)
