"""``generalize``: coarser dates (a birth date -> its year, a timestamp -> its UTC day)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from streams.privacy.exceptions import PolicyError
from streams.privacy.transforms.base import FieldRule, Transform, logical_type
from streams.privacy.transforms.cipher import SubjectCipher

_DATE_TYPES = ("date", "timestamp-millis")


def generalize(value: Any) -> Any:
    """A date -> its year; a timestamp -> its day (as an Avro date)."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc).date()
    if isinstance(value, dt.date):
        return value.year
    raise PolicyError("generalize needs a date or timestamp")


class Generalize(Transform):
    """The one transform that changes the field's type: its clean type depends on the raw one."""

    strength = 1  # a coarser form of the value stays in the clear
    name = "generalize"
    doc = "birth date → year (int), timestamp → day (date); never reversible"

    def check(self, field: FieldRule) -> list[str]:
        if logical_type(field.base_type) not in _DATE_TYPES:
            return ["generalize needs a date or timestamp-millis field"]
        return []

    def clean_type(self, base_type: Any) -> Any:
        return "int" if logical_type(base_type) == "date" else {"type": "int", "logicalType": "date"}

    def field_doc(self, field: FieldRule) -> str:
        return "generalized: year only" if logical_type(field.base_type) == "date" else "generalized: day only"

    def apply(self, value: Any, field: FieldRule, cipher: SubjectCipher) -> Any:
        return generalize(value)
