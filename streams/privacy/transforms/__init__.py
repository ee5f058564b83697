"""The privacy transforms: one class per ``"transform"`` annotation value, registered by name.

To add a transform, write one module with a ``Transform`` subclass (see
``base.py``) and add it to ``BUILTINS`` below; README "Extending: adding a
transform" lists the rest (its tests and README row). A transform must never quote the value it
was given in an error: a failure becomes a poison event without it.
"""

from __future__ import annotations

from streams.privacy.transforms.applier import PolicyApplier, TransformFailed
from streams.privacy.transforms.base import FieldRule, StringTransform, Transform
from streams.privacy.transforms.cipher import HASH_PREFIX, TOKEN_PREFIX, SubjectCipher, token_kind
from streams.privacy.transforms.generalize import Generalize
from streams.privacy.transforms.hash import Hash
from streams.privacy.transforms.mask import Mask
from streams.privacy.transforms.redact import Redact
from streams.privacy.transforms.registry import REGISTRY, lookup, register
from streams.privacy.transforms.tokenize import Tokenize

# The built-in transforms, in the order the README documents them.
BUILTINS: tuple[Transform, ...] = (Tokenize(), Hash(), Mask(), Redact(), Generalize())
for _transform in BUILTINS:
    register(_transform)

__all__ = ["BUILTINS", "FieldRule", "HASH_PREFIX", "PolicyApplier", "REGISTRY", "StringTransform", "SubjectCipher",
           "TOKEN_PREFIX", "Transform", "TransformFailed", "lookup", "register", "token_kind"]
