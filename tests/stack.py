"""Provides the real broker and Redis to the test session, in this order of preference:

1. ``STREAMS_TEST_KAFKA_BOOTSTRAP`` and ``STREAMS_TEST_REDIS_URL`` name a running
   stack (for example one `docker compose up kafka redis` started): use it.
2. A Docker engine answers: start apache/kafka and redis containers with testcontainers.
3. Otherwise (this machine): the project's own local stack (Kafka from Maven jars on
   Java 17, Debian's redis-server) under ``.stack-test/`` on ports that do not clash
   with the demo's; stopped at the end of the session if the session started it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from streams.settings import REPO_ROOT, Settings


def _xdist_index() -> int:
    """This pytest-xdist worker's number (``gw3`` -> 3); 0 outside xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0


# STREAMS_TEST_PORT_OFFSET shifts every port of the test stacks, so two checkouts (git worktrees)
# can run their suites on one machine at once without sharing a broker. Each pytest-xdist worker
# (deploy/test.sh runs the suite in parallel processes) has stacks of its own as well: its ports
# 1000 higher per worker number and its own stack folders. Own stacks rather than one shared:
# the fault tests stop and restart the broker and Redis, which must not hit another process' tests.
_XDIST_INDEX = _xdist_index()
_PORT_OFFSET = int(os.environ.get("STREAMS_TEST_PORT_OFFSET", "0")) + 1000 * _XDIST_INDEX
_DIR_SUFFIX = f"-gw{_XDIST_INDEX}" if _XDIST_INDEX else ""
TEST_STACK_DIR = REPO_ROOT / f".stack-test{_DIR_SUFFIX}"
TEST_KAFKA_PORT = 19092 + _PORT_OFFSET
TEST_REDIS_PORT = 16379 + _PORT_OFFSET
# The secure stack (SASL/SCRAM + ACLs on the broker, ACL users on Redis) for isolation tests.
SECURE_STACK_DIR = REPO_ROOT / f".stack-test-secure{_DIR_SUFFIX}"
SECURE_KAFKA_PORT = 19192 + _PORT_OFFSET
SECURE_REDIS_PORT = 16479 + _PORT_OFFSET
SECURE_ADMIN_PASSWORD = "test-admin-secret-0001"  # test-only credentials of a throwaway local stack
SECURE_REDIS_PASSWORD = "test-redis-secret-0001"
SECURE_REAUTH_MS = 5000


@dataclass(frozen=True)
class StackInfo:
    kafka_bootstrap: str
    redis_url: str
    kafka_log_dirs: tuple[Path, ...]  # broker segment folders, when on this machine
    log_files: tuple[Path, ...]  # the broker's and Redis' own logs
    redis_dir: Path | None  # where the AOF lives, when on this machine
    kind: str
    local: Settings | None = None  # the local stack's settings: fault tests stop and start its processes


def _docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _containers() -> Iterator[StackInfo]:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    port = _free_port()
    kafka = (
        DockerContainer(f"apache/kafka:{Settings().kafka_version}")
        .with_bind_ports(9092, port)
        .with_env("KAFKA_NODE_ID", "1")
        .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
        .with_env("KAFKA_LISTENERS", "PLAINTEXT://:9092,CONTROLLER://:9093")
        .with_env("KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://127.0.0.1:{port}")
        .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT")
        .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
        .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
        .with_env("KAFKA_LOG_CLEANER_BACKOFF_MS", "1000")
    )
    redis_port = _free_port()
    redis = DockerContainer("redis:7").with_bind_ports(6379, redis_port).with_command(
        "redis-server --appendonly yes --appendfsync everysec --save '' --aof-use-rdb-preamble no")
    with kafka, redis:
        wait_for_logs(kafka, "Kafka Server started", timeout=120)
        wait_for_logs(redis, "Ready to accept connections", timeout=60)
        yield StackInfo(f"127.0.0.1:{port}", f"redis://127.0.0.1:{redis_port}/0", (), (), None, "testcontainers")


@contextlib.contextmanager
def _local_stack() -> Iterator[StackInfo]:
    from streams.devstack.stack import LocalStack

    settings = Settings.from_env({
        "STREAMS_STACK_DIR": str(TEST_STACK_DIR),
        "STREAMS_KAFKA_BOOTSTRAP": f"127.0.0.1:{TEST_KAFKA_PORT}",
        "STREAMS_REDIS_URL": f"redis://127.0.0.1:{TEST_REDIS_PORT}/0",
    })
    stack = LocalStack(settings)
    started = not all(stack.status().values())
    stack.up()
    try:
        yield StackInfo(
            settings.kafka_bootstrap, settings.redis_url,
            (stack.kafka.log_dir,),
            (stack.kafka.home / "server.log", stack.kafka.home / "stdout.log", stack.redis.home / "redis.log"),
            stack.redis.home, "local", settings,
        )
    finally:
        if started and not os.environ.get("STREAMS_TEST_KEEP_STACK"):
            stack.down()


def secure_settings_env() -> dict[str, str]:
    return {
        "STREAMS_STACK_DIR": str(SECURE_STACK_DIR),
        "STREAMS_KAFKA_BOOTSTRAP": f"127.0.0.1:{SECURE_KAFKA_PORT}",
        "STREAMS_REDIS_URL": f"redis://streams:{SECURE_REDIS_PASSWORD}@127.0.0.1:{SECURE_REDIS_PORT}/0",
        "STREAMS_KAFKA_SECURITY": "SASL_PLAINTEXT",
        "STREAMS_KAFKA_USERNAME": "admin",
        "STREAMS_KAFKA_PASSWORD": SECURE_ADMIN_PASSWORD,
        # Short, so a test sees a rotated credential end an open session within seconds.
        "STREAMS_KAFKA_REAUTH_MS": str(SECURE_REAUTH_MS),
    }


@contextlib.contextmanager
def provide_secure_stack() -> Iterator[tuple[StackInfo, Settings]]:
    """The project's own local stack in its secure mode (what `docker compose` runs with the secure
    profile): the isolation tests need the broker's authorizer and Redis ACL users."""
    from streams.devstack.stack import LocalStack

    settings = Settings.from_env(secure_settings_env())
    stack = LocalStack(settings)
    started = not all(stack.status().values())
    stack.up()
    try:
        yield StackInfo(settings.kafka_bootstrap, settings.redis_url, (stack.kafka.log_dir,),
                        (stack.kafka.home / "server.log", stack.redis.home / "redis.log"),
                        stack.redis.home, "local-secure"), settings
    finally:
        if started and not os.environ.get("STREAMS_TEST_KEEP_STACK"):
            stack.down()


@contextlib.contextmanager
def provide_stack() -> Iterator[StackInfo]:
    bootstrap = os.environ.get("STREAMS_TEST_KAFKA_BOOTSTRAP")
    redis_url = os.environ.get("STREAMS_TEST_REDIS_URL")
    if bootstrap and redis_url:
        yield StackInfo(bootstrap, redis_url, (), (), None, "external")
    elif _docker_available():
        with _containers() as info:
            yield info
    else:
        with _local_stack() as info:
            yield info
