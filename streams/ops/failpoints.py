"""Named crash points for fault-injection tests (like FreeBSD's failpoints or TiKV's fail-rs).

``STREAMS_FAILPOINTS=erasure.tombstone,erasure.key`` makes the process kill itself
with SIGKILL the first time it reaches one of those points, exactly between two
steps, so a test can prove that a restart completes the work. Unset (always, in
production) a failpoint costs one set lookup.
"""

from __future__ import annotations

import os
import signal

_ACTIVE = frozenset(p.strip() for p in os.environ.get("STREAMS_FAILPOINTS", "").split(",") if p.strip())


def failpoint(name: str) -> None:
    if name in _ACTIVE:
        os.kill(os.getpid(), signal.SIGKILL)
