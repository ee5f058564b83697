"""``tokenize``: a deterministic, subject-keyed token, reversible only by audited detokenize until erasure."""

from __future__ import annotations

from typing import Any

from streams.privacy.transforms.base import FieldRule, StringTransform
from streams.privacy.transforms.cipher import SubjectCipher


class Tokenize(StringTransform):
    """AES-SIV with the subject's key: the same value of one subject gives the same token (joins work)."""

    strength = 2  # nothing in the clear, but reversible with the subject's key (audited detokenize) until erasure
    name = "tokenize"
    doc = ("`tok.<kind>.<…>`: AES-SIV with the subject's key, deterministic per subject; reversible only by "
           "`streams detokenize`, audited, until the subject is erased")

    def field_doc(self, field: FieldRule) -> str:
        return ("token (tok.<kind>.*), deterministic per subject; reversible only via audited detokenize "
                "until the subject is erased")

    def apply(self, value: Any, field: FieldRule, cipher: SubjectCipher) -> Any:
        return cipher.tokenize(field.kind, value)
