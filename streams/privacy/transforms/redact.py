"""``redact``: the value is gone; the field stays (empty, or null where the type allows) so the schema holds."""

from __future__ import annotations

from typing import Any

from streams.privacy.transforms.base import FieldRule, StringTransform
from streams.privacy.transforms.cipher import SubjectCipher


class Redact(StringTransform):
    """For values no part of which may leave: free text, street addresses."""

    strength = 4  # nothing of the value is kept
    name = "redact"
    doc = "empty string (or null where the type allows); never reversible"

    def field_doc(self, field: FieldRule) -> str:
        return "redacted (empty)"

    def apply(self, value: Any, field: FieldRule, cipher: SubjectCipher) -> Any:
        return None if field.nullable else ""
