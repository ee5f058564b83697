"""What a transform is: one class that knows its field's requirements, its clean type, its docs and its values.

A schema field says ``"transform": "<name>"``; the registry
(``streams.privacy.transforms.registry``) maps that name to one ``Transform``.
Everything the pipeline needs to know about a transform lives on it, so the
policy loader, the clean-schema derivation and the applier ask it instead of
branching on its name; a new transform is one module, not edits in four places.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from streams.privacy.transforms.cipher import SubjectCipher


@dataclass(frozen=True)
class FieldRule:
    """One annotated field of a raw schema: where it is, what it holds, what happens to it."""

    path: str  # dotted, arrays as [] (e.g. shipping_address.street, items[].sku)
    kind: str
    transform: str
    nullable: bool
    base_type: Any  # the non-null branch of the field's type


def logical_type(t: Any) -> str | None:
    """The ``logicalType`` of an Avro type, or None."""
    return t.get("logicalType") if isinstance(t, dict) else None


def primitive_type(t: Any) -> Any:
    """The underlying Avro type (``{"type": "int", "logicalType": "date"}`` -> ``"int"``)."""
    return t.get("type") if isinstance(t, dict) else t


class Transform(ABC):
    """One way of treating a field of personal data.

    The methods are called at three moments: ``check`` when a schema's policy is
    loaded (a wrong field type is an error at start, not a poison event later),
    ``clean_type`` and ``field_doc`` when the clean schema is derived (their output
    is in the clean schema's fingerprint and text: changing it is a wire change),
    and ``apply`` for every non-null value of every event.
    """

    name: ClassVar[str]  # the annotation value: "transform": "<name>"
    doc: ClassVar[str]  # one line: what the clean value is (README table, listings)
    #: How much of the value the clean event still gives away, for ``streams schemas compat``: a schema
    #: version moving a field to a weaker transform needs a waiver (``streams.privacy.weakening``,
    #: which lists the levels). A transform that does not say counts as none (0, the value in the clear).
    strength: ClassVar[int] = 0

    @abstractmethod
    def check(self, field: FieldRule) -> list[str]:
        """The problems of using this transform on ``field`` (empty when it fits)."""

    @abstractmethod
    def clean_type(self, base_type: Any) -> Any:
        """The Avro type of the clean value, for a raw field of (non-null) type ``base_type``."""

    @abstractmethod
    def field_doc(self, field: FieldRule) -> str:
        """What the clean field holds, for its ``doc`` in the clean schema (after ``PII (<kind>) ``)."""

    @abstractmethod
    def apply(self, value: Any, field: FieldRule, cipher: SubjectCipher) -> Any:
        """The clean value of ``value`` (never None: nulls are passed over). Raise on a value it cannot
        treat; the applier turns that into a poison event without quoting the value."""

    def __repr__(self) -> str:
        return f"<transform {self.name}>"


class StringTransform(Transform):
    """A transform from a string to a string: the shape of all but ``generalize``."""

    def check(self, field: FieldRule) -> list[str]:
        if primitive_type(field.base_type) != "string":
            return [f"{self.name} needs a string field"]
        return []

    def clean_type(self, base_type: Any) -> Any:
        return "string"
