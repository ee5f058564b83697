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


class WorkerProcess:
    """A worker started as an operator would (`streams worker`), with its log in a file."""

    def __init__(self, settings: Settings, log_path: Path, extra_env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli.main", "worker", "--no-create-topics"],
            env={**settings_env(settings), **(extra_env or {})}, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
            start_new_session=True,
        )

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
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[[Settings], WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def start(settings: Settings, ready: bool = True, extra_env: dict[str, str] | None = None) -> WorkerProcess:
        w = WorkerProcess(settings, tmp_path / f"worker-{len(workers)}.log", extra_env)
        workers.append(w)
        if ready:
            w.wait_ready()
        return w

    yield start
    for w in workers:
        w.stop()
