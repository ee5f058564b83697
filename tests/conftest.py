"""One real stack per test session; each test gets its own topics, tenants and consumer group."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

from streams.settings import REPO_ROOT, Settings, to_env
from tests.stack import StackInfo, provide_secure_stack, provide_stack


# Per-test time limits by group (pytest-timeout; the default in pyproject.toml, 120 s, is for unit
# tests, where more means a hang). They include fixture set-up, so the first test of a session
# also pays for starting the stack. A module's own `pytest.mark.timeout` (faults, demo) wins.
GROUP_TIMEOUTS = {"e2e": 300, "integration": 180}


# tryfirst: pytest-xdist reads the `xdist_group` marks added here in its own collection hook.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        # Under `pytest -n N --dist loadgroup` (deploy/test.sh), every test of the secure stack runs
        # in one xdist worker, so the session starts one secure stack, not one per worker.
        if "secure_stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("secure-stack"))
        if item.get_closest_marker("timeout") is not None:
            continue
        for group, seconds in GROUP_TIMEOUTS.items():
            if item.get_closest_marker(group) is not None:
                item.add_marker(pytest.mark.timeout(seconds))
                break


@pytest.fixture(scope="session")
def stack() -> Iterator[StackInfo]:
    with provide_stack() as info:
        yield info


@pytest.fixture(scope="session")
def secure_stack() -> Iterator[tuple[StackInfo, Settings]]:
    """Started only by the tests that ask for it (SASL/SCRAM broker with ACLs, Redis ACL users)."""
    with provide_secure_stack() as info:
        yield info


@pytest.fixture
def make_secure_settings(secure_stack: tuple[StackInfo, Settings], tmp_path: Path) -> Callable[..., Settings]:
    """Like make_settings, against the secure stack, as the pipeline's (super) user."""
    from streams.ops.topics import ensure_topics

    _, base = secure_stack

    def make(**overrides: object) -> Settings:
        run = uuid.uuid4().hex[:8]
        s = dataclasses.replace(
            base, raw_topic=f"events.raw.{run}", dlq_topic=f"events.dlq.{run}", app_id=f"streams-test-{run}",
            requests_topic=f"privacy.requests.{run}", audit_topic=f"audit.{run}", tenants=frozenset(),
            data_dir=tmp_path / f"worker-{run}", master_key_file=tmp_path / f"keys-{run}" / "master.key",
            web_enabled=False, batch_within=0.01,
        )
        s = dataclasses.replace(s, **overrides)
        ensure_topics(s)
        return s

    return make


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_settings(stack: StackInfo, tmp_path: Path) -> Callable[..., Settings]:
    """Settings isolated from other tests: own raw/DLQ topics, app id and tenants; topics created."""
    from streams.ops.topics import ensure_topics

    def make(**overrides: object) -> Settings:
        run = uuid.uuid4().hex[:8]
        base = Settings.from_env({})
        s = dataclasses.replace(
            base,
            kafka_bootstrap=stack.kafka_bootstrap,
            redis_url=stack.redis_url,
            raw_topic=f"events.raw.{run}",
            dlq_topic=f"events.dlq.{run}",
            quarantine_topic=f"events.quarantine.{run}",
            app_id=f"streams-test-{run}",
            requests_topic=f"privacy.requests.{run}",
            audit_topic=f"audit.{run}",
            tenants=frozenset({f"acme{run[:4]}", f"globex{run[:4]}"}),
            data_dir=tmp_path / f"worker-{run}",
            master_key_file=tmp_path / f"keys-{run}" / "master.key",
            web_enabled=False,
            batch_within=0.01,
        )
        s = dataclasses.replace(s, **overrides)
        ensure_topics(s)
        return s

    return make


def settings_env(s: Settings) -> dict[str, str]:
    """The environment that makes a worker process see exactly these settings."""
    env = dict(os.environ)
    env.update(to_env(s))
    env["PYTHONUNBUFFERED"] = "1"
    return env


# Worker processes alive in this session: a test that times out ends pytest with os._exit (the
# `thread` timeout method, see pyproject.toml), skipping every teardown, so they are killed first.
_LIVE_WORKERS: set["WorkerProcess"] = set()


def _kill_live_workers() -> None:
    for w in list(_LIVE_WORKERS):
        try:
            os.killpg(w.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


try:
    import pytest_timeout as _pytest_timeout

    _timeout_timer = _pytest_timeout.timeout_timer

    def _timeout_timer_killing_workers(item, settings):  # type: ignore[no-untyped-def]
        _kill_live_workers()
        _timeout_timer(item, settings)

    _pytest_timeout.timeout_timer = _timeout_timer_killing_workers
except ImportError:  # pytest refuses to start without it (required_plugins); nothing to hook then
    pass


class WorkerProcess:
    """A worker started as an operator would (`streams worker`), with its log in a file.

    At teardown (``start_worker``) a worker must exit cleanly: status 0 on SIGTERM within the
    stop timeout, and no "Traceback" in its log, unless the test killed it on purpose
    (``kill()``, or ``killed_on_purpose=True`` for a worker a failpoint ends).
    """

    def __init__(self, settings: Settings, log_path: Path, extra_env: dict[str, str] | None = None,
                 killed_on_purpose: bool = False) -> None:
        self.settings = settings
        self.log_path = log_path
        self.killed_on_purpose = killed_on_purpose
        self.stop_timed_out = False
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli.main", "worker", "--no-create-topics"],
            env={**settings_env(settings), **(extra_env or {})}, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
            start_new_session=True,
        )
        _LIVE_WORKERS.add(self)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            if "Worker ready" in self.log_text():
                return
            time.sleep(0.2)
        raise AssertionError(f"worker not ready in {timeout}s:\n{self.log_text()[-3000:]}")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL the process group; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.stop_timed_out = True
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        _LIVE_WORKERS.discard(self)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the process group, on purpose: teardown then does not ask for a clean exit."""
        self.killed_on_purpose = True
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        _LIVE_WORKERS.discard(self)

    def unclean_exit(self) -> str | None:
        """Why this (stopped) worker's exit was not clean, or None; always None if killed on purpose."""
        if self.killed_on_purpose:
            return None
        log = self.log_text()
        if self.stop_timed_out:
            return f"did not stop within its timeout after SIGTERM (killed):\n{log[-3000:]}"
        if self.proc.returncode != 0:
            return f"exited with status {self.proc.returncode}:\n{log[-3000:]}"
        return self.traceback_excerpt()

    def traceback_excerpt(self) -> str | None:
        """The first traceback in the log with its context (enough to see what raised), or None."""
        log = self.log_text()
        if "Traceback" not in log:
            return None
        i = log.index("Traceback")
        return f"logged a traceback:\n{log[max(0, i - 500):i + 2500]}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keeps each phase's report on the item (``rep_call``): fixtures read whether the test failed."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


WORKER_LOG_TAIL_LINES = 150


@pytest.fixture
def start_worker(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., WorkerProcess]]:
    """Starts workers; at teardown stops them and fails the test if one did not exit cleanly
    (see ``WorkerProcess``). When the test failed, the end of every worker's log is printed (it is
    in the report: the temporary directory that holds the logs is gone a few runs later)."""
    workers: list[WorkerProcess] = []

    def start(settings: Settings, ready: bool = True, extra_env: dict[str, str] | None = None,
              killed_on_purpose: bool = False) -> WorkerProcess:
        w = WorkerProcess(settings, tmp_path / f"worker-{len(workers)}.log", extra_env, killed_on_purpose)
        workers.append(w)
        if ready:
            w.wait_ready()
        return w

    yield start
    for w in workers:
        w.stop()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for i, w in enumerate(workers):
            lines = w.log_text().splitlines()[-WORKER_LOG_TAIL_LINES:]
            print(f"\n===== worker {i} ({w.log_path}), last {len(lines)} lines =====\n" + "\n".join(lines))
    problems = [f"worker {i} ({w.log_path.name}) {why}" for i, w in enumerate(workers)
                if (why := w.unclean_exit()) is not None]
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)
