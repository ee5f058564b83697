"""Errors of the schema package. Messages never contain field values."""

from streams.errors import StreamsError


class SchemaError(StreamsError):
    """Base of schema errors."""


class SchemaFileError(SchemaError):
    """A file under schemas/ is not a usable Avro schema (an operator error, raised at start)."""


class DecodeError(SchemaError):
    """The bytes are not a decodable event (DLQ reason ``undecodable``)."""


class UnknownSchemaError(SchemaError):
    """The writer schema is not in the registry (DLQ reason ``unknown_schema``)."""


class SchemaViolation(SchemaError):
    """The datum does not satisfy its schema.

    ``field`` is the dotted path of the offending field and ``expected`` what
    the schema wanted there; neither ever contains the value itself, because
    the value may be personal data.
    """

    def __init__(self, field: str, expected: str) -> None:
        self.field = field
        self.expected = expected
        super().__init__(f"field '{field}': expected {expected}")
