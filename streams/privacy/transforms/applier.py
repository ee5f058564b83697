"""Applying the schema's privacy policy to an event: the raw datum in, the clean datum out.

Pure functions of (datum, rules, subject key); which transform a field gets is
looked up in the registry once per schema, so an unknown name fails when the
applier is built, not per event.
"""

from __future__ import annotations

from typing import Any, Callable

from streams.privacy.exceptions import PrivacyError
from streams.privacy.transforms.base import FieldRule
from streams.privacy.transforms.cipher import SubjectCipher
from streams.privacy.transforms.registry import lookup


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


class PolicyApplier:
    """Applies one schema's rules. Built once per schema; ``apply`` per event."""

    def __init__(self, rules: list[FieldRule]) -> None:
        self.rules = rules
        # path -> rule and its transform, split into segments once; "[]" marks an array level.
        self._plans = [(rule, lookup(rule.transform), rule.path.split(".")) for rule in rules]

    def apply(self, datum: dict[str, Any], cipher: SubjectCipher) -> dict[str, Any]:
        """Transform every annotated field of ``datum`` in place (the caller owns the freshly
        decoded datum; copying it first was measurable) and return it."""
        for rule, transform, segments in self._plans:
            try:
                _transform_at(datum, segments, lambda v: transform.apply(v, rule, cipher))
            except Exception as exc:  # one event's value, not the pipeline: the caller sends it to the DLQ
                raise TransformFailed(rule.path, rule.transform, type(exc).__name__) from None
        return datum


def _transform_at(node: Any, segments: list[str], fn: Callable[[Any], Any]) -> None:
    seg = segments[0]
    if seg.endswith("[]"):
        items = node.get(seg[:-2]) if isinstance(node, dict) else None
        for item in items or []:
            _transform_at(item, segments[1:], fn)
        return
    if not isinstance(node, dict) or seg not in node:
        return
    if len(segments) == 1:
        value = node[seg]
        if value is not None:
            node[seg] = fn(value)
        return
    _transform_at(node[seg], segments[1:], fn)
