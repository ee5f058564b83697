"""Wording helpers for what the CLI prints."""

from __future__ import annotations


def plural(n: int, word: str, many: str | None = None) -> str:
    """``"1 event"``, ``"2 events"``, ``"0 events"``; ``many`` for irregular plurals (``entry``/``entries``).

    Only the last word is inflected: ``plural(3, "subject key")`` is ``"3 subject keys"``.
    """
    if n == 1:
        return f"{n} {word}"
    if many is None:
        many = word[:-1] + "ies" if word.endswith("y") and word[-2:-1] not in "aeiou" else (
            word + "es" if word.endswith(("s", "x", "ch", "sh")) else word + "s")
    return f"{n} {many}"
