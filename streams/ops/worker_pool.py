"""Several worker processes on one machine, started and stopped together (``streams worker --processes N``).

Why processes: a worker is one Python process, and its event loop holds one core (the GIL); on a
machine with more cores the rest sit idle. Each process is an ordinary member of the consumer group
(Kafka shares the partitions among them exactly as among workers on different machines), so nothing
about ordering, erasure or fencing changes. The pool only starts, watches and stops them, like a
process supervisor would:

* process ``i`` serves its HTTP endpoints (``/live``, ``/ready``, ``/metrics``) on ``web_port + i``;
  every port is checked before anything starts, so a taken one is one clear error, not a half pool;
* SIGTERM or SIGINT stops every process (SIGTERM to each, SIGKILL after ``stop_timeout``); the pool
  exits 0 only if every process exited 0;
* a process that dies while the pool runs is started again after a back-off (1 s, doubling to 30 s;
  reset once it has run ``STABLE_S``); ``MAX_QUICK_FAILURES`` quick deaths in a row of one slot stop
  the pool with status 1 (a fault every process hits: a wrong setting, a broker that refuses it);
* a process that exits with status 2 (a usage or configuration error) stops the pool with status 2:
  starting it again would fail the same way.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

log = logging.getLogger(__name__)

STABLE_S = 30.0  # a process that ran this long counts as started well: its back-off starts again at 1 s
MAX_QUICK_FAILURES = 5
BACKOFF_MAX_S = 30.0
USAGE_ERROR = 2


@dataclass
class _Slot:
    index: int
    argv: list[str]
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    quick_failures: int = 0
    restart_at: float | None = None
    restarts: int = 0


@dataclass
class WorkerPool:
    """``argv_of(i)``: the command line of process ``i``. ``spawn`` starts one (tests may wrap it)."""
    argv_of: Callable[[int], list[str]]
    processes: int
    stop_timeout: float = 60.0
    stable_s: float = STABLE_S
    max_quick_failures: int = MAX_QUICK_FAILURES
    backoff_base_s: float = 1.0
    spawn: Callable[[Sequence[str]], subprocess.Popen] = field(default=lambda argv: subprocess.Popen(list(argv)))
    clock: Callable[[], float] = time.monotonic
    poll_s: float = 0.2
    _slots: list[_Slot] = field(default_factory=list, init=False)
    _stop_signal: int | None = field(default=None, init=False)

    def _start(self, slot: _Slot) -> None:
        slot.proc = self.spawn(slot.argv)
        slot.started_at = self.clock()
        slot.restart_at = None
        log.warning("worker process %d started (pid %d)", slot.index, slot.proc.pid)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._stop_signal = signum

    def pids(self) -> list[int]:
        """The live processes' pids (for tools and tests)."""
        return [s.proc.pid for s in self._slots if s.proc is not None and s.proc.poll() is None]

    def run(self) -> int:
        """Start every process, keep them running until a signal, then stop them; the exit status."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._slots = [_Slot(i, self.argv_of(i)) for i in range(self.processes)]
            for slot in self._slots:
                self._start(slot)
            status = self._watch()
            return self._stop_all(status)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _watch(self) -> int:
        """Until a stop signal (0) or a failure that restarting cannot mend (its status)."""
        while self._stop_signal is None:
            now = self.clock()
            for slot in self._slots:
                if slot.proc is None:
                    if slot.restart_at is not None and now >= slot.restart_at:
                        slot.restarts += 1
                        self._start(slot)
                    continue
                code = slot.proc.poll()
                if code is None:
                    if now - slot.started_at >= self.stable_s:
                        slot.quick_failures = 0
                    continue
                slot.proc = None
                if code == USAGE_ERROR:
                    log.error("worker process %d exited with status 2 (a usage or configuration error): "
                              "stopping the pool", slot.index)
                    return USAGE_ERROR
                quick = now - slot.started_at < self.stable_s
                slot.quick_failures = slot.quick_failures + 1 if quick else 1
                if slot.quick_failures >= self.max_quick_failures:
                    log.error("worker process %d died %d times in a row within %.0f s of starting (last status %s): "
                              "stopping the pool; its log above says why", slot.index, slot.quick_failures,
                              self.stable_s, code)
                    return 1
                delay = min(BACKOFF_MAX_S, self.backoff_base_s * 2.0 ** (slot.quick_failures - 1))
                slot.restart_at = now + delay
                log.error("worker process %d exited with status %s: starting it again in %.1f s", slot.index, code,
                          delay)
            time.sleep(self.poll_s)
        log.warning("signal %s: stopping %d worker processes", signal.Signals(self._stop_signal).name,
                    len(self.pids()))
        return 0

    def _stop_all(self, status: int) -> int:
        live = [s for s in self._slots if s.proc is not None and s.proc.poll() is None]
        for slot in live:
            try:
                slot.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = self.clock() + self.stop_timeout
        worst = status
        for slot in [s for s in self._slots if s.proc is not None]:
            try:
                code = slot.proc.wait(max(0.0, deadline - self.clock()))
            except subprocess.TimeoutExpired:
                log.error("worker process %d (pid %d) still running %.0f s after SIGTERM: killed", slot.index,
                          slot.proc.pid, self.stop_timeout)
                slot.proc.kill()
                slot.proc.wait()
                code = 1
            if code != 0:
                log.error("worker process %d exited with status %s", slot.index, code)
                worst = worst or 1
        return worst


def child_argv(base: Sequence[str], index: int, web_port: int | None) -> list[str]:
    """Process ``index``'s command line: ``base`` (without ``--processes``) and its own web port."""
    argv = list(base)
    if web_port is not None:
        argv += ["--web-port", str(web_port + index)]
    return argv

