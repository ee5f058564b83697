"""The local stack without Docker: Apache Kafka (KRaft, from Maven jars) and Redis.

Used by ``streams stack up|down|status``, by the demo and by the test fixtures,
so all three run exactly the same broker and Redis configuration.

Processes are started in their own session with pid files under the stack
directory; ``down`` stops them by pid (SIGTERM, then SIGKILL), so no stray
process survives a Ctrl-C of the demo or the end of a test session.

Long because it is the whole harness in one place: fetching Kafka's jars, the broker's plain and
secure configurations (SCRAM users, ACLs, the controller's credentials), Redis' configuration and
ACL file, and process control for both. Only the CLI and the tests use it; split it by process
(jars, kafka, redis) when it next grows.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path
from urllib.parse import urlparse

from streams.devstack.exceptions import StackError
from streams.settings import REPO_ROOT, SCRAM_MECHANISM, Settings

log = logging.getLogger(__name__)

POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"


# The broker's own principals in the secure mode (never a client's).
INTER_BROKER_USER = "broker"
CONTROLLER_USER = "controller"
# What the ``security`` file of a formatted stack says: a secure stack formatted before the
# broker had principals of its own cannot start with today's properties (no ``broker`` user).
STACK_FORMAT = {"PLAINTEXT": "PLAINTEXT", "SASL_PLAINTEXT": "SASL_PLAINTEXT internal-principals"}


def _port_of_bootstrap(bootstrap: str) -> tuple[str, int]:
    first = bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    return host or "127.0.0.1", int(port)


def ensure_kafka_jars(version: str, cache: Path) -> Path:
    """Fetch the broker's jars into ``cache`` once; return the folder of jars."""
    libs = cache / f"kafka-{version}" / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    if not shutil.which("mvn"):
        raise StackError("Maven (mvn) is needed to fetch Kafka's jars; install it (apt-get install maven)")
    libs.mkdir(parents=True, exist_ok=True)
    print(f"fetching Apache Kafka {version} jars with Maven into {libs} (once) ...", file=sys.stderr, flush=True)
    cmd = [
        "mvn", "-q", "-B", "-f", str(POM), f"-Dkafka.version={version}",
        "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={libs}",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise StackError(f"mvn failed fetching Kafka {version}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    if not any(libs.glob("kafka_2.13-*.jar")):
        raise StackError(f"mvn finished but no kafka_2.13 jar landed in {libs}")
    marker.write_text(version)
    return libs


def ensure_redis_server() -> str:
    """Path of redis-server, installing Debian's package when missing and allowed."""
    path = shutil.which("redis-server")
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing redis-server with apt-get ...", file=sys.stderr, flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, capture_output=True)
        r = subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server"], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise StackError(f"apt-get install redis-server failed:\n{r.stderr[-2000:]}")
        path = shutil.which("redis-server")
        if path:
            return path
    raise StackError("redis-server not found: install Redis 7 (Debian: apt-get install redis-server)")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _stop_pidfile(pidfile: Path, name: str, timeout: float = 20.0) -> bool:
    if not pidfile.exists():
        return False
    try:
        pid = int(pidfile.read_text().strip())
    except ValueError:
        pidfile.unlink(missing_ok=True)
        return False
    if _pid_alive(pid):
        log.info("stopping %s (pid %d)", name, pid)
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _pid_alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    try:  # reap it if it is our own child, so no zombie lingers while we run on
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    pidfile.unlink(missing_ok=True)
    return True


def _wait_ports_free(ports: list[int], timeout: float) -> None:
    import socket

    deadline = time.monotonic() + timeout
    busy = ports
    while time.monotonic() < deadline:
        busy = []
        for port in ports:
            with socket.socket() as s:
                s.settimeout(0.5)
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    busy.append(port)
        if not busy:
            return
        time.sleep(0.5)
    raise StackError(f"ports {busy} are in use by another process; stop it or choose other ports")


def _spawn(cmd: list[str], logfile: Path, pidfile: Path, env: dict[str, str] | None = None) -> int:
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with open(logfile, "ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env,
        )
    pidfile.write_text(str(proc.pid))
    return proc.pid


@dataclass
class _ManagedProcess:
    """A server process of the local stack, tracked by a pid file in ``stack_dir/<name>``."""

    settings: Settings
    name: ClassVar[str] = ""
    stop_timeout: ClassVar[float] = 20.0

    @property
    def home(self) -> Path:
        return self.settings.stack_dir / self.name

    @property
    def pidfile(self) -> Path:
        return self.home / f"{self.name}.pid"

    def running(self) -> bool:
        if not self.pidfile.exists():
            return False
        try:
            return _pid_alive(int(self.pidfile.read_text().strip()))
        except ValueError:
            return False

    def stop(self) -> bool:
        return _stop_pidfile(self.pidfile, self.name, timeout=self.stop_timeout)


#: Broker settings that bound how long an open transaction can hold back read_committed readers:
#: at most transaction.max.timeout.ms + the abort check's interval (65 s). Also in
#: docker-compose.yml and deploy/kafka/secure-start.sh (tests/unit/test_deploy_config.py compares).
TRANSACTION_BOUNDS: dict[str, str] = {
    "transaction.max.timeout.ms": "60000",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "5000",
}


@dataclass
class LocalKafka(_ManagedProcess):
    """A single-node KRaft broker (combined broker+controller) in ``stack_dir/kafka``."""

    name: ClassVar[str] = "kafka"
    stop_timeout: ClassVar[float] = 30.0

    @property
    def log_dir(self) -> Path:
        return self.home / "data"

    def server_properties(self) -> str:
        host, port = _port_of_bootstrap(self.settings.kafka_bootstrap)
        cport = port + 1
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{cport}",
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.log_dir),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Workers read events.raw read_committed: an open transaction there holds back every
            # record after it in its partition, every tenant's, until the broker aborts it. That
            # bound is the producer's transaction.timeout.ms, capped here (the Kafka default cap is
            # 15 min), plus the interval of the broker's check for timed-out transactions.
            **TRANSACTION_BOUNDS,
            "num.network.threads": "2",
            "num.io.threads": "2",
            # Compaction must really run in tests of erasure: check often.
            "log.cleaner.backoff.ms": "1000",
            "log.retention.check.interval.ms": "10000",
        }
        if self.settings.kafka_secure:
            props.update(self._secure_properties(port))
        return "".join(f"{k}={v}\n" for k, v in props.items())

    @property
    def internal_credentials_file(self) -> Path:
        return self.home / "internal-credentials"

    def internal_credentials(self) -> dict[str, str]:
        """Passwords of the broker's own principals, made once per stack dir (mode 0600).

        ``broker`` (SCRAM, inter-broker traffic) and ``controller`` (PLAIN, the controller
        listener) are principals of their own: no client credential is needed for the broker's
        internal traffic, and nothing is granted to ``User:ANONYMOUS``.
        """
        import json
        import secrets

        path = self.internal_credentials_file
        if path.exists():
            return json.loads(path.read_text())
        creds = {"broker": secrets.token_urlsafe(24), "controller": secrets.token_urlsafe(24)}
        self.home.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(json.dumps(creds))
        return creds

    def _secure_properties(self, port: int) -> dict[str, str]:
        """SASL on every listener and ACLs enforced (DESIGN decision 8); nothing for ANONYMOUS.

        - Clients: SASL/SCRAM-SHA-512 on ``127.0.0.1:port``.
        - Inter-broker: the same listener with the broker's own SCRAM user ``broker``.
        - Controller (``127.0.0.1:port+1``): SASL/PLAIN with a static JAAS user ``controller``.
          SCRAM cannot serve there (its credentials live in the metadata log the controller
          itself serves), and PLAINTEXT would make every unauthenticated caller ANONYMOUS, which
          the broker's own controller calls then needed as a super user: with that, anyone
          reaching the port could grant themselves anything. PLAIN over loopback sends the
          password in clear on a link only this machine sees; mTLS would need a CA for a
          single-node dev stack.
        - ``connections.max.reauth.ms``: a client re-authenticates within that time, so a
          rotated or deleted credential ends its open sessions.
        """
        s = self.settings
        _check_credentials("STREAMS_KAFKA_USERNAME", s.kafka_username, "STREAMS_KAFKA_PASSWORD", s.kafka_password)
        internal = self.internal_credentials()
        scram = ("org.apache.kafka.common.security.scram.ScramLoginModule required "
                 f'username="{INTER_BROKER_USER}" password="{internal["broker"]}";')
        plain = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
                 f'username="{CONTROLLER_USER}" password="{internal["controller"]}" '
                 f'user_{CONTROLLER_USER}="{internal["controller"]}";')
        return {
            "listeners": f"SASL_PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{port + 1}",
            "advertised.listeners": f"SASL_PLAINTEXT://127.0.0.1:{port}",
            "listener.security.protocol.map": "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
            "inter.broker.listener.name": "SASL_PLAINTEXT",
            "sasl.enabled.mechanisms": SCRAM_MECHANISM,
            "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
            f"listener.name.sasl_plaintext.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": scram,
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": plain,
            "connections.max.reauth.ms": str(s.kafka_reauth_ms),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "false",
            "super.users": f"User:{s.kafka_username};User:{INTER_BROKER_USER};User:{CONTROLLER_USER}",
        }

    def _log4j(self) -> str:
        return (
            "status = warn\n"
            "appender.file.type = File\n"
            "appender.file.name = FILE\n"
            f"appender.file.fileName = {self.home / 'server.log'}\n"
            "appender.file.layout.type = PatternLayout\n"
            "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = INFO\n"
            "rootLogger.appenderRef.file.ref = FILE\n"
            "logger.kafka.name = org.apache.kafka\n"
            "logger.kafka.level = WARN\n"
            # The authorizer's audit log: every denied operation, with principal and resource.
            "appender.auth.type = File\n"
            "appender.auth.name = AUTH\n"
            f"appender.auth.fileName = {self.home / 'kafka-authorizer.log'}\n"
            "appender.auth.layout.type = PatternLayout\n"
            "appender.auth.layout.pattern = [%d] %p %m (%c)%n\n"
            "logger.authorizer.name = kafka.authorizer.logger\n"
            "logger.authorizer.level = INFO\n"
            "logger.authorizer.additivity = false\n"
            "logger.authorizer.appenderRef.auth.ref = AUTH\n"
        )

    def _java(self) -> str:
        java = shutil.which("java")
        if not java:
            raise StackError("java not found: Kafka 4.x needs Java 17 or newer")
        return java

    def start(self, timeout: float = 90.0) -> None:
        if self.running():
            self.wait_ready(timeout)
            return
        libs = ensure_kafka_jars(self.settings.kafka_version, self.settings.jar_cache)
        java = self._java()
        self.home.mkdir(parents=True, exist_ok=True)
        props = self.home / "server.properties"
        props.touch(mode=0o600)  # holds the SCRAM password in the secure mode
        props.chmod(0o600)
        props.write_text(self.server_properties())
        mode_file = self.home / "security"
        mode = self.settings.kafka_security
        (self.home / "log4j2.properties").write_text(self._log4j())
        cp = f"{libs}/*"
        jvm = ["-Xms256m", "-Xmx768m", "-XX:+UseSerialGC", f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}"]
        if not (self.log_dir / "meta.properties").exists():
            extra = []
            if self.settings.kafka_secure:
                # SCRAM users live in the metadata log: the first one is written at format time.
                extra = ["--add-scram", f"{SCRAM_MECHANISM}=[name={self.settings.kafka_username},"
                                        f"password={self.settings.kafka_password}]",
                         "--add-scram", f"{SCRAM_MECHANISM}=[name={INTER_BROKER_USER},"
                                        f"password={self.internal_credentials()['broker']}]"]
            r = subprocess.run(
                [java, *jvm, "-cp", cp, "kafka.tools.StorageTool", "format",
                 # "=" form: a random id may start with "-", which the tool's parser takes for an option
                 f"--cluster-id={_kafka_cluster_id()}",
                 "-c", str(props), "--standalone", *extra],
                capture_output=True, text=True,
            )
            if r.returncode != 0:
                out = r.stdout[-2000:] + r.stderr[-2000:]
                for secret in (self.settings.kafka_password, *self.internal_credentials().values()):
                    out = out.replace(secret or "\0", "***")
                raise StackError(f"formatting the Kafka log dir failed:\n{out}")
            mode_file.write_text(STACK_FORMAT[mode])
        elif (found := mode_file.read_text().strip() if mode_file.exists() else "PLAINTEXT") != STACK_FORMAT[mode]:
            raise StackError(f"the stack in {self.settings.stack_dir} was set up as {found!r}, not "
                             f"{STACK_FORMAT[mode]!r}: its users live in the broker's metadata. Use another "
                             "STREAMS_STACK_DIR, or `streams stack wipe` first")
        _, port = _port_of_bootstrap(self.settings.kafka_bootstrap)
        _wait_ports_free([port, port + 1], timeout=30)  # a broker just stopped may still hold them
        _spawn([java, *jvm, "-cp", cp, "kafka.Kafka", str(props)], self.home / "stdout.log", self.pidfile)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        """Ready means the AdminClient gets metadata, not that a port is open."""
        from confluent_kafka.admin import AdminClient

        from streams.connections import admin_config

        admin = AdminClient(admin_config(self.settings.kafka(), {"log_level": 0,
                                                                 "logger": logging.getLogger("streams.ops.admin")}))
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.pidfile.exists() and not self.running():
                raise StackError(f"Kafka exited during start; see {self.home / 'stdout.log'} and server.log")
            try:
                md = admin.list_topics(timeout=2)
                if md.brokers:
                    return
            except Exception as exc:  # KafkaException while the broker boots
                last = exc
            time.sleep(0.5)
        raise StackError(f"Kafka not ready after {timeout:.0f}s ({last}); see {self.home / 'server.log'}")



def _check_credentials(user_var: str, username: str, password_var: str, password: str) -> None:
    """The local stack writes credentials into files with their own quoting (the storage tool's
    ``--add-scram``, the JAAS line, Redis' ACL file): keep them plain."""
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", username):
        raise StackError(f"{user_var}: 1-64 of letters, digits, '.', '_', '-'")
    if not re.fullmatch(r"[A-Za-z0-9._~-]{12,128}", password):
        raise StackError(f"{password_var}: 12-128 of letters, digits, '.', '_', '~', '-' for the local stack")


def _kafka_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding."""
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


@dataclass
class LocalRedis(_ManagedProcess):
    """Debian's redis-server with AOF on, in ``stack_dir/redis``."""

    name: ClassVar[str] = "redis"

    @property
    def port(self) -> int:
        return urlparse(self.settings.redis_url).port or 6379

    def config(self) -> str:
        return "".join(
            f"{line}\n"
            for line in [
                "bind 127.0.0.1",
                f"port {self.port}",
                f"dir {self.home}",
                "daemonize no",
                # No RDB snapshots: a dump.rdb would keep erased values that no AOF rewrite removes.
                "save ''",
                # AOF on: the store survives restarts; erasure later rewrites it
                # so deleted values leave the disk (DESIGN decision 6).
                "appendonly yes",
                "appendfsync everysec",
                'appendfilename "appendonly.aof"',
                # The rewritten AOF base in plain RESP, not an RDB preamble: RDB LZF-compresses and
                # int-encodes values, so a search of the files for an erased value could miss it.
                # The same three settings in docker-compose.yml and deploy/redis/secure-start.sh
                # (tests/unit/test_deploy_config.py compares them).
                "aof-use-rdb-preamble no",
                f"logfile {self.home / 'redis.log'}",
                *self._acl_lines(),
            ]
        )

    @property
    def acl_file(self) -> Path:
        return self.home / "users.acl"

    def _acl_lines(self) -> list[str]:
        """With a user and password in STREAMS_REDIS_URL, ACLs live in ``users.acl``: that user has
        every right, the passwordless default user is off, and tenant users added at onboarding
        (``ACL SETUSER`` + ``ACL SAVE``) survive a restart."""
        return [f"aclfile {self.acl_file}"] if urlparse(self.settings.redis_url).password else []

    def _write_acl_file(self) -> None:
        url = urlparse(self.settings.redis_url)
        if not url.password:
            return
        user = url.username or "default"
        _check_credentials("STREAMS_REDIS_URL's user", user, "STREAMS_REDIS_URL's password", url.password)
        keep = []
        if self.acl_file.exists():  # tenant users saved by onboarding stay
            keep = [line for line in self.acl_file.read_text().splitlines()
                    if line.split()[:2] not in (["user", user], ["user", "default"])]
        lines = [f"user {user} on #{hashlib.sha256(url.password.encode()).hexdigest()} ~* &* +@all"]
        if user != "default":
            lines.append("user default off nopass resetkeys -@all")
        self.acl_file.touch(mode=0o600)
        self.acl_file.write_text("\n".join(lines + keep) + "\n")

    def start(self, timeout: float = 20.0) -> None:
        if not self.running():
            binary = ensure_redis_server()
            self.home.mkdir(parents=True, exist_ok=True)
            conf = self.home / "redis.conf"
            _wait_ports_free([self.port], timeout=10)  # e.g. a redis-server whose pid file was deleted
            self._write_acl_file()
            conf.write_text(self.config())
            _spawn([binary, str(conf)], self.home / "stdout.log", self.pidfile)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        from streams.connections import redis_probe_client

        client = redis_probe_client(self.settings, 1.0)
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.pidfile.exists() and not self.running():
                raise StackError(f"redis-server exited during start; see {self.home / 'redis.log'}")
            try:
                if client.ping():
                    return
            except Exception as exc:
                last = exc
            time.sleep(0.2)
        raise StackError(f"Redis not ready after {timeout:.0f}s ({last})")



@dataclass
class LocalStack:
    """Kafka and Redis together; ``up`` is idempotent, ``down`` leaves nothing running."""

    settings: Settings

    def __post_init__(self) -> None:
        self.kafka = LocalKafka(self.settings)
        self.redis = LocalRedis(self.settings)

    def up(self) -> None:
        self.redis.start()
        self.kafka.start()

    def down(self) -> None:
        self.kafka.stop()
        self.redis.stop()

    def status(self) -> dict[str, bool]:
        return {"kafka": self.kafka.running(), "redis": self.redis.running()}

    def wipe(self) -> None:
        """Stop and delete all local data (topics, store)."""
        self.down()
        shutil.rmtree(self.settings.stack_dir / "kafka", ignore_errors=True)
        shutil.rmtree(self.settings.stack_dir / "redis", ignore_errors=True)
