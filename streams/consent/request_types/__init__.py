"""Privacy request types, registered by name: a new type is one class plus one registration line.

``kinds()`` lists them in registration order (the CLI's and the API's choices, the OpenAPI
enum); ``kind(name)`` looks one up (``None`` for a name nobody registered: the request is
invalid, never mapped to another type). See README "Extending: adding a privacy request type".

It must not hold I/O or state beyond the registry: a type's ``apply`` is a pure function of the
subject's state and the request, so every worker reaches the same state.
"""

from __future__ import annotations

from streams.consent.request_types.base import RequestKind
from streams.consent.request_types.builtin import Erase, EraseAndSuppress, Grant, OptIn, OptOut, Revoke

GRANT, REVOKE, OPT_OUT, OPT_IN, ERASE, ERASE_AND_SUPPRESS = (
    Grant(), Revoke(), OptOut(), OptIn(), Erase(), EraseAndSuppress())
BUILTINS: tuple[RequestKind, ...] = (GRANT, REVOKE, OPT_OUT, OPT_IN, ERASE, ERASE_AND_SUPPRESS)

_REGISTRY: dict[str, RequestKind] = {}


def register(k: RequestKind) -> RequestKind:
    """Add a request type; a name taken by another type is refused (a type is never replaced)."""
    if not k.name or not k.name.replace("_", "").isalnum() or not k.name.islower():
        raise ValueError(f"a request type name is lower-case letters, digits and '_': {k.name!r}")
    if not getattr(k, "doc", ""):
        raise ValueError(f"request type {k.name!r} has no doc")
    taken = _REGISTRY.get(k.name)
    if taken is not None and taken is not k:
        raise ValueError(f"request type {k.name!r} is registered already")
    _REGISTRY[k.name] = k
    return k


def unregister(name: str) -> None:
    """Remove a type registered by a test or plugin; the built-ins stay."""
    if any(b.name == name for b in BUILTINS):
        raise ValueError(f"{name!r} is a built-in request type")
    _REGISTRY.pop(name, None)


def kind(name: object) -> RequestKind | None:
    return _REGISTRY.get(name) if isinstance(name, str) else None


def kinds() -> tuple[RequestKind, ...]:
    return tuple(_REGISTRY.values())


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


for _k in BUILTINS:
    register(_k)

__all__ = ["RequestKind", "register", "unregister", "kind", "kinds", "names", "BUILTINS",
           "GRANT", "REVOKE", "OPT_OUT", "OPT_IN", "ERASE", "ERASE_AND_SUPPRESS"]
