"""The Docker deployment (docker-compose.yml, deploy/Dockerfile) agrees with the code.

No Docker engine is needed: the files are parsed and checked against
``streams.settings``, the CLI's parser and pyproject.toml. Only the last test
asks ``docker compose config`` and is skipped when no engine is reachable.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from streams.cli.main import build_parser
from streams.settings import REPO_ROOT, Settings, env_var_names

COMPOSE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"
PYPROJECT = REPO_ROOT / "pyproject.toml"

STREAMS_VAR = re.compile(r"\bSTREAMS_[A-Z0-9_]+\b")


# ---------------------------------------------------------------- parsing helpers

@pytest.fixture(scope="module")
def compose() -> dict:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict) and isinstance(doc.get("services"), dict), "compose file has no services"
    return doc


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment inside a continued instruction
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        if buf:
            word, _, rest = buf.partition(" ")
            out.append((word.upper(), rest.strip()))
        buf = ""
    assert not buf, "Dockerfile ends inside a continued line"
    return out


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return dockerfile_instructions(DOCKERFILE.read_text())


def instr(dockerfile: list[tuple[str, str]], name: str) -> list[str]:
    return [args for word, args in dockerfile if word == name]


def exec_form(args: str) -> list[str]:
    """JSON (exec) form of ENTRYPOINT/CMD; shell form is split like a shell would."""
    args = args.strip()
    if args.startswith("["):
        value = json.loads(args)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value)
        return value
    return shlex.split(args)


def env_of(service: dict) -> dict[str, str]:
    """A service's environment as a dict (map or list form), values as strings."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        return {k: v for k, v in pairs}
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def command_of(service: dict) -> list[str]:
    cmd = service.get("command")
    if cmd is None:
        return []
    return list(map(str, cmd)) if isinstance(cmd, list) else shlex.split(cmd)


def depends_on(service: dict) -> dict[str, str]:
    """{service: condition}; the short list form means service_started."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {d: "service_started" for d in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def dockerfile_env(dockerfile: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in instr(dockerfile, "ENV"):
        tokens = shlex.split(args)
        if tokens and "=" not in tokens[0]:  # legacy `ENV KEY value`
            env[tokens[0]] = " ".join(tokens[1:])
            continue
        for tok in tokens:
            k, _, v = tok.partition("=")
            env[k] = v
    return env


def dockerfile_exposed_ports(dockerfile: list[tuple[str, str]]) -> set[int]:
    ports = set()
    for args in instr(dockerfile, "EXPOSE"):
        for tok in args.split():
            ports.add(int(tok.split("/")[0]))
    return ports


def host_port(hostport: str, default: int | None = None) -> tuple[str, int]:
    host, sep, port = hostport.rpartition(":")
    if not sep:
        assert default is not None, f"{hostport!r} has no port"
        return hostport, default
    return host, int(port)


def streams_services(services: dict) -> dict[str, dict]:
    """Services built from deploy/Dockerfile (the ones running `streams`)."""
    out = {}
    for name, svc in services.items():
        build = svc.get("build")
        if isinstance(build, dict) and Path(build.get("dockerfile", "")).as_posix() == "deploy/Dockerfile":
            out[name] = svc
    return out


def kafka_listeners(services: dict) -> dict[str, tuple[str, int]]:
    """{listener name: (host, port)} of the kafka service's KAFKA_LISTENERS."""
    env = env_of(services["kafka"])
    out = {}
    for item in env["KAFKA_LISTENERS"].split(","):
        name, _, hostport = item.strip().partition("://")
        out[name] = host_port(hostport)
    return out


def kafka_advertised(services: dict) -> dict[str, tuple[str, int]]:
    env = env_of(services["kafka"])
    out = {}
    for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","):
        name, _, hostport = item.strip().partition("://")
        out[name] = host_port(hostport)
    return out


# ---------------------------------------------------------------- STREAMS_* names

def test_compose_and_dockerfile_use_only_known_streams_variables(compose: dict) -> None:
    known = set(env_var_names())
    # Any STREAMS_* token anywhere (env maps, anchors, commands), minus comments.
    compose_text = "\n".join(line.split("#", 1)[0] for line in COMPOSE.read_text().splitlines())
    docker_text = "\n".join(line.split("#", 1)[0] for line in DOCKERFILE.read_text().splitlines())
    used = set(STREAMS_VAR.findall(compose_text)) | set(STREAMS_VAR.findall(docker_text))
    assert used, "expected the deployment to configure the pipeline through STREAMS_* variables"
    unknown = sorted(used - known)
    assert not unknown, f"STREAMS_* variables that streams/settings.py does not read: {unknown}"


def test_streams_services_environment_builds_valid_settings(services: dict, dockerfile) -> None:
    """Each streams container's env (Dockerfile ENV, then compose) is accepted by Settings.from_env."""
    svcs = streams_services(services)
    assert {"worker", "topics"} <= set(svcs), f"worker and topics must build deploy/Dockerfile, got {sorted(svcs)}"
    base = dockerfile_env(dockerfile)
    for name, svc in svcs.items():
        env = {**base, **env_of(svc)}
        settings = Settings.from_env(env)  # raises SettingsError on a bad value
        assert settings.kafka_bootstrap == env["STREAMS_KAFKA_BOOTSTRAP"], name
        assert settings.redis_url == env["STREAMS_REDIS_URL"], name
        assert settings.tenants, f"{name}: no tenants configured"


def test_worker_and_topics_share_the_same_configuration(services: dict) -> None:
    # Topics must be created with the partitions/tenants the workers expect.
    assert env_of(services["worker"]) == env_of(services["topics"])


def test_worker_partitions_allow_scaling_out(services: dict) -> None:
    partitions = Settings.from_env(env_of(services["worker"])).partitions
    assert partitions >= 3, f"STREAMS_PARTITIONS={partitions}: `--scale worker=3` would leave workers idle"


def test_dockerfile_sets_schemas_and_data_dirs(dockerfile) -> None:
    env = dockerfile_env(dockerfile)
    schemas = env.get("STREAMS_SCHEMAS_DIR")
    data = env.get("STREAMS_DATA_DIR")
    assert schemas and data, "Dockerfile must set STREAMS_SCHEMAS_DIR and STREAMS_DATA_DIR"
    # The schemas folder is where the repo's schemas/ is copied.
    copies = [shlex.split(a) for a in instr(dockerfile, "COPY")]
    dests = {c[-1].rstrip("/") for c in copies if any(s.rstrip("/") == "schemas" for s in c[:-1])}
    assert schemas.rstrip("/") in dests, f"STREAMS_SCHEMAS_DIR={schemas} but schemas/ is copied to {dests}"
    # The data dir is created and handed to the unprivileged user.
    runs = " ".join(instr(dockerfile, "RUN"))
    assert data in runs or any(data.startswith(p) for p in re.findall(r"mkdir -p (\S+)", runs)), \
        f"STREAMS_DATA_DIR={data} is never created"
    assert "chown" in runs, "the data dir must be owned by the runtime user"


# ---------------------------------------------------------------- service wiring

def test_bootstrap_and_redis_url_point_at_compose_services(services: dict) -> None:
    listeners = kafka_listeners(services)
    advertised = kafka_advertised(services)
    redis_port = 6379
    redis_cmd = command_of(services["redis"])
    if "--port" in redis_cmd:
        redis_port = int(redis_cmd[redis_cmd.index("--port") + 1])
    for name, svc in streams_services(services).items():
        env = env_of(svc)
        for server in env["STREAMS_KAFKA_BOOTSTRAP"].split(","):
            host, port = host_port(server.strip())
            assert host in services, f"{name}: bootstrap host {host!r} is not a compose service"
            assert host == "kafka"
            # The port is a listener the broker binds, and advertises under the same name.
            internal = [ln for ln, (_, p) in listeners.items() if p == port]
            assert internal, f"{name}: port {port} is not one of kafka's listeners {listeners}"
            assert internal[0] != "CONTROLLER", f"{name}: bootstrap points at the controller listener"
            assert advertised.get(internal[0]) == ("kafka", port), \
                f"{name}: listener {internal[0]} is advertised as {advertised.get(internal[0])}, not kafka:{port}"
        url = urlparse(env["STREAMS_REDIS_URL"])
        assert url.scheme == "redis"
        assert url.hostname in services, f"{name}: redis host {url.hostname!r} is not a compose service"
        assert url.hostname == "redis"
        assert (url.port or 6379) == redis_port, f"{name}: redis port {url.port} != {redis_port}"


def test_kafka_has_a_host_listener_advertised_as_localhost(services: dict) -> None:
    kafka = services["kafka"]
    advertised = kafka_advertised(services)
    host_listeners = [ln for ln, (h, _) in advertised.items() if h in ("localhost", "127.0.0.1")]
    assert host_listeners, f"no listener advertised for the host: {advertised}"
    port = advertised[host_listeners[0]][1]
    published = [str(p) for p in kafka.get("ports", [])]
    assert any(p.split(":")[-2:] == [str(port), str(port)] for p in published), \
        f"host listener port {port} is not published as {port}:{port}: {published}"
    assert kafka_listeners(services)[host_listeners[0]][1] == port


def test_kafka_controller_quorum_matches_controller_listener(services: dict) -> None:
    env = env_of(services["kafka"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node = env["KAFKA_NODE_ID"]
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    ctrl = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    _, ctrl_port = kafka_listeners(services)[ctrl]
    assert voters == [f"{node}@kafka:{ctrl_port}"]
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(kafka_listeners(services)) <= set(protocols)


def test_kafka_image_matches_settings_kafka_version(services: dict) -> None:
    image = services["kafka"]["image"]
    repo, _, tag = image.partition(":")
    assert repo == "apache/kafka", image
    assert re.fullmatch(r"4\.\d+\.\d+", tag), f"expected a 4.x release tag, got {tag!r}"
    assert tag == Settings().kafka_version, \
        f"compose runs Kafka {tag}, the local stack (Settings.kafka_version) runs {Settings().kafka_version}"


def test_kafka_does_not_auto_create_topics(services: dict) -> None:
    env = env_of(services["kafka"])
    assert env.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE") == "false"
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"):
        assert env.get(key) == "1", f"{key} must be 1 on a single broker"
    assert env.get("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS") == "0"


def test_kafka_healthcheck_lists_topics(services: dict) -> None:
    test = services["kafka"]["healthcheck"]["test"]
    joined = " ".join(test) if isinstance(test, list) else test
    assert "/opt/kafka/bin/kafka-topics.sh" in joined and "--list" in joined
    port = int(re.search(r"--bootstrap-server\s+\S+:(\d+)", joined).group(1))
    assert port in {p for _, p in kafka_listeners(services).values()}


def test_redis_keeps_an_append_only_file(services: dict) -> None:
    redis = services["redis"]
    cmd = command_of(redis)
    assert cmd[cmd.index("--appendonly") + 1] == "yes", cmd
    assert cmd[cmd.index("--appendfsync") + 1] == "everysec", cmd
    assert redis.get("volumes"), "Redis' AOF must live on a volume"
    test = redis["healthcheck"]["test"]
    assert "redis-cli" in test and "ping" in test


# The Redis settings that decide what an erasure leaves on disk (DESIGN decision 6): AOF on, no RDB
# snapshot (a dump.rdb would keep erased values), and a plain-RESP AOF base after a rewrite (an RDB
# preamble LZF-compresses values, so a byte search of the files for an erased value could miss it).
REDIS_PERSISTENCE = {"appendonly": "yes", "appendfsync": "everysec", "save": "", "aof-use-rdb-preamble": "no"}


def _redis_flags(argv: list[str]) -> dict[str, str]:
    """``--name value`` pairs of a redis-server command line."""
    out = {}
    for i, arg in enumerate(argv):
        if arg.startswith("--") and i + 1 < len(argv):
            out[arg[2:]] = argv[i + 1]
    return out


def _local_redis_config() -> dict[str, str]:
    from streams.devstack.stack import LocalRedis

    conf: dict[str, str] = {}
    for line in LocalRedis(Settings()).config().splitlines():
        parts = shlex.split(line)
        if parts:
            conf[parts[0]] = " ".join(parts[1:])
    return conf


def test_redis_persistence_is_the_same_in_compose_secure_compose_and_local_stack(services: dict) -> None:
    """docker-compose.yml's Redis command, deploy/redis/secure-start.sh's exec line (the secure
    override) and the local stack's redis.conf all set exactly REDIS_PERSISTENCE."""
    compose_flags = _redis_flags(command_of(services["redis"]))
    script = (REPO_ROOT / "deploy" / "redis" / "secure-start.sh").read_text()
    exec_line = next(line for line in script.splitlines() if line.startswith("exec redis-server"))
    secure_flags = _redis_flags(shlex.split(exec_line))
    local = _local_redis_config()
    secure_doc = yaml.safe_load(SECURE.read_text())
    assert "secure-start.sh" in " ".join(command_of(secure_doc["services"]["redis"])), \
        "the secure override no longer runs secure-start.sh: compare its Redis command instead"
    for key, want in REDIS_PERSISTENCE.items():
        assert compose_flags.get(key) == want, ("docker-compose.yml", key, compose_flags.get(key))
        assert secure_flags.get(key) == want, ("deploy/redis/secure-start.sh", key, secure_flags.get(key))
        assert local.get(key) == want, ("streams/devstack/stack.py", key, local.get(key))


def test_worker_is_scalable(services: dict) -> None:
    worker = services["worker"]
    assert "container_name" not in worker, "container_name prevents `--scale worker=N`"
    assert not worker.get("ports"), "a host port mapping prevents `--scale worker=N`; use expose"
    assert "hostname" not in worker
    for port in worker.get("expose", []):
        assert int(str(port).split("/")[0]) == Settings().web_port


def test_worker_depends_on_kafka_redis_and_topics(services: dict) -> None:
    deps = depends_on(services["worker"])
    assert deps.get("kafka") == "service_healthy", deps
    assert deps.get("redis") == "service_healthy", deps
    assert deps.get("topics") == "service_completed_successfully", deps
    assert depends_on(services["topics"]).get("kafka") == "service_healthy"
    for name in deps:
        assert name in services


def test_worker_and_topics_build_from_repo_root(services: dict) -> None:
    for name in ("worker", "topics"):
        build = services[name]["build"]
        assert (REPO_ROOT / build["context"]).resolve() == REPO_ROOT
        assert (REPO_ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE.resolve()


def test_worker_does_not_override_the_web_port(services: dict) -> None:
    # The image's EXPOSE and HEALTHCHECK are fixed at Settings().web_port.
    for name, svc in streams_services(services).items():
        env = env_of(svc)
        if "STREAMS_WEB_PORT" in env:
            assert int(env["STREAMS_WEB_PORT"]) == Settings().web_port, name
        assert "--web-port" not in command_of(svc), name


# ---------------------------------------------------------------- commands vs CLI

def _parse(argv: list[str]):
    """build_parser().parse_args, turning argparse's exit into a readable failure."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"`streams {' '.join(argv)}` is rejected by the CLI's parser")


def _subcommands() -> dict:
    import argparse

    parser = build_parser()
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(subs) == 1
    return subs[0].choices


def test_compose_commands_are_real_cli_commands(services: dict) -> None:
    choices = _subcommands()
    for name, svc in streams_services(services).items():
        cmd = command_of(svc)
        assert cmd, f"{name}: no command"
        assert cmd[0] in choices, f"{name}: {cmd[0]!r} is not a `streams` command ({sorted(choices)})"
        args = _parse(cmd)  # fails on an unknown option or a bad choice
        assert args.command == cmd[0]


def test_worker_runs_without_creating_topics(services: dict) -> None:
    cmd = command_of(services["worker"])
    assert cmd[0] == "worker"
    assert "--no-create-topics" in cmd
    assert _parse(cmd).no_create_topics is True
    topics = _parse(command_of(services["topics"]))
    assert (topics.command, topics.action) == ("topics", "create")


def test_dockerfile_default_cmd_is_a_cli_command(dockerfile) -> None:
    (cmd,) = instr(dockerfile, "CMD")
    words = exec_form(cmd)
    assert words[0] in _subcommands()
    _parse(words)


# ---------------------------------------------------------------- Dockerfile

def test_dockerfile_entrypoint_is_the_console_script(dockerfile) -> None:
    scripts = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]
    (entry,) = instr(dockerfile, "ENTRYPOINT")
    words = exec_form(entry)
    assert words == ["streams"], words
    assert words[0] in scripts
    assert scripts[words[0]] == "streams.cli.main:main"


def test_dockerfile_base_and_user(dockerfile) -> None:
    (base,) = instr(dockerfile, "FROM")
    assert base.split()[0] == "python:3.11-slim"
    users = instr(dockerfile, "USER")
    assert users, "the image must not run as root"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_dockerfile_copies_what_pip_install_needs(dockerfile) -> None:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    sources = set()
    for args in instr(dockerfile, "COPY"):
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        sources.update(w.rstrip("/") for w in words[:-1])
    needed = {"pyproject.toml", "streams", "schemas"}
    readme = project.get("readme")
    if isinstance(readme, str):
        needed.add(readme)  # setuptools reads it while building the metadata
    missing = needed - sources
    assert not missing, f"Dockerfile does not COPY {sorted(missing)}"
    assert any(re.search(r"\bpip install\b.*\s\.(\s|$)", r + " ") for r in instr(dockerfile, "RUN"))


def test_dockerfile_copy_sources_exist_in_the_repo(dockerfile) -> None:
    missing = []
    for args in instr(dockerfile, "COPY"):
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        missing += [w for w in words[:-1] if not (REPO_ROOT / w).exists()]
    assert not missing, f"COPY sources missing from the build context (repo root): {missing}"


def test_dockerfile_exposes_the_web_port(dockerfile) -> None:
    assert Settings().web_port in dockerfile_exposed_ports(dockerfile)


def test_dockerfile_healthcheck_hits_live_on_the_web_port(dockerfile) -> None:
    # Liveness, not readiness: a Redis blip must not have every worker's container marked unhealthy.
    (hc,) = instr(dockerfile, "HEALTHCHECK")
    assert " CMD " in f" {hc} ", hc
    assert "curl" not in hc and "wget" not in hc, "python:3.11-slim has neither curl nor wget"
    assert "python" in hc
    urls = re.findall(r"https?://[^\s'\"]+", hc)
    assert urls, hc
    for url in urls:
        u = urlparse(url)
        assert u.hostname in ("127.0.0.1", "localhost")
        assert u.port == Settings().web_port, f"healthcheck port {u.port} != Settings.web_port"
        assert u.path == "/live"


def test_health_endpoints_exist_in_the_app() -> None:
    # The path the HEALTHCHECK asks must be a page of the worker's app (and the older /health stays).
    source = (REPO_ROOT / "streams" / "app.py").read_text()
    for path in ("/live", "/ready", "/health"):
        assert re.search(rf"""@app\.page\(\s*["']{path}["']\s*\)""", source), path


# ---------------------------------------------------------------- with a Docker engine

def _docker_engine_reachable() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        r = subprocess.run(["docker", "info"], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def test_docker_compose_config_validates() -> None:
    if not _docker_engine_reachable():
        pytest.skip("no Docker engine reachable (`docker info` failed); compose validated statically only")
    if subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=20).returncode != 0:
        pytest.skip("Docker engine reachable but the `docker compose` plugin is missing")
    r = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------- the secure override

SECURE = REPO_ROOT / "deploy" / "compose.secure.yml"


def _interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR:?message} and ${VAR} with the given values."""
    return re.sub(r"\$\{([A-Z0-9_]+)(:\?[^}]*)?\}", lambda m: env[m.group(1)], value)


def test_secure_override_builds_secure_settings_for_worker_and_topics(dockerfile) -> None:
    doc = yaml.safe_load(SECURE.read_text())
    secrets = {"STREAMS_KAFKA_PASSWORD": "kafka-pass-0123", "STREAMS_REDIS_PASSWORD": "redis-pass-0123"}
    for name in ("worker", "topics"):
        env = {k: _interpolate(str(v), secrets) for k, v in doc["services"][name]["environment"].items()}
        s = Settings.from_env({**dockerfile_env(dockerfile), **env})
        assert s.kafka_secure and s.kafka_password == "kafka-pass-0123" and s.kafka_username == "admin"
        assert s.redis_url == "redis://streams:redis-pass-0123@redis:6379/0"
    assert set(STREAMS_VAR.findall(SECURE.read_text())) - {"STREAMS_REDIS_PASSWORD"} <= set(env_var_names())


def test_secure_kafka_script_matches_the_local_stack() -> None:
    """The compose broker is configured like `streams stack` in its secure mode."""
    from streams.devstack.stack import LocalKafka

    script = (REPO_ROOT / "deploy" / "kafka" / "secure-start.sh").read_text()
    local = LocalKafka(Settings(kafka_security="SASL_PLAINTEXT", kafka_password="kafka-pass-0123"))._secure_properties(9092)
    for key in ("authorizer.class.name", "allow.everyone.if.no.acl.found", "sasl.enabled.mechanisms",
                "sasl.mechanism.inter.broker.protocol", "super.users", "listener.name.controller.sasl.enabled.mechanisms",
                "sasl.mechanism.controller.protocol"):
        assert f"{key}={local[key]}" in script, key
    assert "CONTROLLER:SASL_PLAINTEXT" in script and "CONTROLLER://127.0.0.1:9093" in script
    assert "connections.max.reauth.ms=" in script
    assert "--add-scram \"SCRAM-SHA-512=[name=broker," in script
    doc = yaml.safe_load(SECURE.read_text())
    mounted = [v.split(":")[0] for v in doc["services"]["kafka"]["volumes"] + doc["services"]["redis"]["volumes"]]
    for path in mounted:
        if path.startswith("./"):
            assert (REPO_ROOT / path).is_file(), path
    assert "--aclfile" in (REPO_ROOT / "deploy" / "redis" / "secure-start.sh").read_text()


def test_every_broker_bounds_open_transactions_alike(services: dict) -> None:
    """An open transaction on events.raw holds back read_committed workers until the broker aborts
    it: every broker the project configures caps that time the same way (README, "Transactions")."""
    from streams.devstack.stack import TRANSACTION_BOUNDS, LocalKafka

    local = LocalKafka(Settings()).server_properties()
    script = (REPO_ROOT / "deploy" / "kafka" / "secure-start.sh").read_text()
    env = env_of(services["kafka"])
    assert int(TRANSACTION_BOUNDS["transaction.max.timeout.ms"]) <= 60_000  # not Kafka's 15-minute default
    for key, value in TRANSACTION_BOUNDS.items():
        assert f"{key}={value}\n" in local, key
        assert f"{key}={value}" in script, key
        assert env.get("KAFKA_" + key.upper().replace(".", "_")) == value, key
