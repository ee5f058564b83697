"""Transforms by name: the one place the policy loader, the clean-schema derivation and the applier look.

An unknown name is a ``PolicyError`` when a schema is loaded (naming the known
ones), never a silent fall-through to some default transform.
"""

from __future__ import annotations

import re

from streams.privacy.exceptions import PolicyError
from streams.privacy.transforms.base import Transform

REGISTRY: dict[str, Transform] = {}  # name -> transform, in registration order (the README's order)

_NAME_RE = re.compile(r"[a-z][a-z_]{0,31}")


def register(transform: Transform) -> Transform:
    """Make ``transform`` usable as ``"transform": "<its name>"``; return it.

    Raises ValueError for a malformed name or one already taken: replacing a transform
    in place would silently change what existing schemas put on the wire.
    """
    name = getattr(transform, "name", None)
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(f"transform name {name!r} must be lower case letters and '_' (at most 32)")
    if name in REGISTRY:
        raise ValueError(f"transform '{name}' is already registered ({REGISTRY[name]!r})")
    REGISTRY[name] = transform
    return transform


def lookup(name: str) -> Transform:
    """The transform registered as ``name``; PolicyError naming the known ones otherwise."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise PolicyError(f"unknown transform {name!r} (known: {', '.join(REGISTRY)})") from None
