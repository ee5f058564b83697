"""Sizes, additional data and record formats of the key material stored in Redis.

The Redis key names themselves are in ``streams.keyspace`` (the one place that shows every key);
this module holds what is inside them: how a subject-key value is written and parsed, and the
``aad`` strings that bind each wrapped key to what it is for.
"""

from __future__ import annotations

import base64
import binascii
import re

#: Bytes of a subject key: AES-SIV with a 512-bit key (two AES-256 halves).
SUBJECT_KEY_BYTES = 64
#: Bytes of a tenant key (AES-256-GCM).
TENANT_KEY_BYTES = 32

_NONCE_BYTES = 12
_TAG_BYTES = 16


def tenant_key_aad(tenant: str, version: int) -> bytes:
    return f"tenant-key/{tenant}/v{version}".encode()


def subject_key_aad(tenant: str, subject: str) -> bytes:
    return f"subject-key/{tenant}/{subject}".encode()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


_SUBJECT_VALUE_RE = re.compile(r"v([1-9][0-9]{0,9}):([A-Za-z0-9+/=]+)")
_SUBJECT_BLOB_BYTES = _NONCE_BYTES + SUBJECT_KEY_BYTES + _TAG_BYTES


def _parse_subject_value(tenant: str, value: bytes | str) -> tuple[int, bytes]:
    try:
        m = _SUBJECT_VALUE_RE.fullmatch(_text(value))
        blob = base64.b64decode(m.group(2), validate=True) if m else b""
    except (UnicodeDecodeError, binascii.Error, ValueError):
        m, blob = None, b""
    if m is None or len(blob) != _SUBJECT_BLOB_BYTES:
        raise _SubjectDamaged
    return int(m.group(1)), blob


def check_aad(tenant: str) -> bytes:
    return f"master-key-check/{tenant}".encode()


class _VersionGone(Exception):
    """The tenant-key version a subject key referred to is gone (a rotation moved it on)."""


class _SubjectDamaged(Exception):
    """A subject key record is malformed, or does not unwrap under its (good) tenant key."""

