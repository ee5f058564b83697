"""The subject-keyed cryptography behind ``tokenize`` and ``hash`` (and ``streams detokenize``).

Tokens and hashes are keyed by the subject's own key (``streams.privacy.keys``),
so destroying that key (erasure) makes every token of the subject irreversible
and every hash unlinkable at once, wherever copies of them went.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from streams.privacy.exceptions import TokenError

TOKEN_PREFIX = "tok"
HASH_PREFIX = "hash"
_TOKEN_RE = re.compile(r"tok\.([a-z_]{1,32})\.([A-Za-z0-9_-]{20,})")


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
    """The kind a token claims (unauthenticated: only ``detokenize`` proves it), or None."""
    m = _TOKEN_RE.fullmatch(token)
    return m.group(1) if m else None
