"""``mask``: keep one documented part of the value (per kind, ``MASKS``) and star the rest."""

from __future__ import annotations

from typing import Any

from streams.privacy.exceptions import PolicyError
from streams.privacy.transforms.base import FieldRule, StringTransform
from streams.privacy.transforms.cipher import SubjectCipher

# What `mask` keeps, per kind (documented in README and in the clean schema's field doc).
MASKS = {
    "email": "the domain: ***@example.com",
    "phone": "the last 2 digits: ***47",
    "postal_code": "the first 2 characters: 10***",
    "ip_address": "the first two octets: 192.168.*.*",
}


def mask(kind: str, value: str) -> str:
    """Keep the documented part (MASKS) and star the rest; never more than that part."""
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


class Mask(StringTransform):
    """Only for the kinds with a documented mask: a mask that keeps "some" of a name would leak it."""

    strength = 1  # a documented part of the value stays in the clear
    name = "mask"
    doc = ("keeps a documented part: email domain, phone's last 2 digits, postal code's first 2 characters, "
           "IP address's first two octets")

    def check(self, field: FieldRule) -> list[str]:
        problems = super().check(field)
        if field.kind not in MASKS:
            problems.append(f"no mask is defined for kind '{field.kind}' "
                            f"(masks exist for: {', '.join(sorted(MASKS))})")
        return problems

    def field_doc(self, field: FieldRule) -> str:
        return f"masked, keeping {MASKS.get(field.kind, '')}"

    def apply(self, value: Any, field: FieldRule, cipher: SubjectCipher) -> Any:
        return mask(field.kind, value)
