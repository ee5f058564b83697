"""``hash``: a keyed one-way hash per subject, unlinkable once the subject's key is destroyed."""

from __future__ import annotations

from typing import Any

from streams.privacy.transforms.base import FieldRule, StringTransform
from streams.privacy.transforms.cipher import SubjectCipher


class Hash(StringTransform):
    """HMAC-SHA256 with the subject's key: countable within a subject, never reversible."""

    strength = 3  # nothing in the clear, never reversible; equal values stay linkable per subject until erasure
    name = "hash"
    doc = "`hash.<kind>.<32 hex>`: HMAC-SHA256 with the subject's key; never reversible, unlinkable after erasure"

    def field_doc(self, field: FieldRule) -> str:
        return "keyed one-way hash per subject (hash.<kind>.*)"

    def apply(self, value: Any, field: FieldRule, cipher: SubjectCipher) -> Any:
        return cipher.hash(field.kind, value)
