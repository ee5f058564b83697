"""The failpoint spec: a bare name kills, ``=sleep:<ms>`` pauses; anything else is refused at start."""

from __future__ import annotations

import pytest

from streams.ops.failpoints import _parse


def test_names_kill_and_sleep_pauses() -> None:
    assert _parse("erasure.tombstone, batch.gated=sleep:1500,erasure.key=kill") == {
        "erasure.tombstone": None, "batch.gated": 1.5, "erasure.key": None}
    assert _parse("") == {}


def test_an_unknown_action_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown action"):
        _parse("batch.gated=slow")
