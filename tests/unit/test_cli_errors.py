"""The CLI's failures: one line on stderr and a documented exit status, never a traceback.

Every command runs as a subprocess (`python -m streams.cli.main`, from this
checkout) against addresses where nothing listens, or where something accepts
connections and never answers. The flows on a real stack, with one of Kafka,
Redis or the audit trail missing, are in tests/e2e/test_cli_errors.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.cli.errors import EXIT_BROKEN_PIPE, EXIT_UNREACHABLE, EXIT_USAGE
from streams.cli.main import build_parser
from streams.cli.text import plural

ROOT = Path(__file__).resolve().parents[2]
DOWN = "127.0.0.1:1"  # nothing listens on port 1


def run(*argv: str, env: dict[str, str] | None = None, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "streams.cli.main", *argv], env=full_env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, **kw)


def assert_one_line(r: subprocess.CompletedProcess, code: int, *words: str) -> str:
    err = r.stderr
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert r.returncode == code, (r.returncode, err)
    for w in words:
        assert w in err, (w, err)
    return err


def _subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sorted(action.choices)


# ---------------------------------------------------------------- everything down

BOTH_DOWN = {"STREAMS_KAFKA_BOOTSTRAP": DOWN, "STREAMS_REDIS_URL": f"redis://{DOWN}/0"}

# (argv, the dependency it needs first). Redis is probed before Kafka.
COMMANDS = [
    (["store", "acme", "--count"], "Redis"),
    (["store", "acme", "--subject", "s1"], "Redis"),
    (["privacy", "status", "acme", "--request-id", "r1"], "Redis"),
    (["privacy", "report", "acme"], "Redis"),
    (["privacy", "file", "acme", "--type", "erase", "--subject", "s1"], "Redis"),
    (["keys", "show", "acme"], "Redis"),
    (["keys", "rotate", "acme"], "Redis"),
    (["detokenize", "acme", "s1", "tok.email.x", "--reason", "r"], "Redis"),
    (["tenants", "list"], "Redis"),
    (["tenants", "create", "newco"], "Redis"),
    (["tenants", "describe", "acme"], "Redis"),
    (["tenants", "rotate-credentials", "acme"], "Redis"),
    (["tenants", "delete", "acme", "--yes"], "Redis"),
    (["apikeys", "list"], "Redis"),
    (["apikeys", "create", "--role", "operator"], "Redis"),
    (["worker", "--web-port", "0"], "Redis"),
    (["audit", "verify"], "Kafka"),
    (["topics", "create"], "Kafka"),
    (["tail", "acme", "--max", "1"], "Kafka"),
    (["dlq", "--max", "1"], "Kafka"),
]


@pytest.mark.parametrize("argv,dep", COMMANDS, ids=[" ".join(a) for a, _ in COMMANDS])
def test_every_command_names_the_unreachable_dependency_in_one_line(argv, dep):
    t0 = time.monotonic()
    r = run(*argv, env=BOTH_DOWN)
    setting = "STREAMS_REDIS_URL" if dep == "Redis" else "STREAMS_KAFKA_BOOTSTRAP"
    err = assert_one_line(r, EXIT_UNREACHABLE, f"{dep} is unreachable", setting, f"streams {argv[0]}:")
    assert "connection refused" in err.lower()
    assert time.monotonic() - t0 < 15  # not the clients' 30 s waits


def test_publish_with_kafka_down_names_kafka(tmp_path):
    from streams.ingest import samples

    f = tmp_path / "events.jsonl"
    f.write_text(json.dumps(samples.signup("acme", "s1")))
    r = run("publish", str(f), env=BOTH_DOWN)
    assert_one_line(r, EXIT_UNREACHABLE, "Kafka is unreachable", "STREAMS_KAFKA_BOOTSTRAP")


def test_redis_url_password_is_never_printed():
    r = run("store", "acme", "--count", env={"STREAMS_REDIS_URL": f"redis://ops:s3cr3t-pw@{DOWN}/0"})
    err = assert_one_line(r, EXIT_UNREACHABLE, "Redis is unreachable", "ops:***@")
    assert "s3cr3t-pw" not in err


def test_secure_kafka_names_the_credential_settings_too():
    r = run("audit", "verify", env={"STREAMS_KAFKA_BOOTSTRAP": DOWN, "STREAMS_KAFKA_SECURITY": "SASL_PLAINTEXT",
                                    "STREAMS_KAFKA_PASSWORD": "pw-not-shown"})
    err = assert_one_line(r, EXIT_UNREACHABLE, "STREAMS_KAFKA_USERNAME", "STREAMS_KAFKA_PASSWORD")
    assert "pw-not-shown" not in err


# ---------------------------------------------------------------- something listens and never answers

@pytest.fixture
def silent_port():
    """A port that accepts TCP connections (into the backlog) and never says a word."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield sock.getsockname()[1]
    sock.close()


def test_kafka_that_does_not_answer_is_reported_within_seconds(silent_port):
    t0 = time.monotonic()
    r = run("audit", "verify", env={"STREAMS_KAFKA_BOOTSTRAP": f"127.0.0.1:{silent_port}"})
    elapsed = time.monotonic() - t0
    assert_one_line(r, EXIT_UNREACHABLE, "Kafka is unreachable", "no answer", "STREAMS_KAFKA_BOOTSTRAP")
    assert elapsed < 15, elapsed  # the probe's 5 s, not the audit reader's 60 s


def test_redis_that_does_not_answer_is_reported_within_seconds(silent_port):
    t0 = time.monotonic()
    r = run("store", "acme", "--count", env={"STREAMS_REDIS_URL": f"redis://127.0.0.1:{silent_port}/0"})
    elapsed = time.monotonic() - t0
    assert_one_line(r, EXIT_UNREACHABLE, "Redis is unreachable", "timed out", "STREAMS_REDIS_URL")
    assert elapsed < 15, elapsed


# ---------------------------------------------------------------- argument errors come first

@pytest.mark.parametrize("argv,words", [
    (["tenants", "delete", "acme"], ["not deleted", "--yes"]),
    (["tenants", "create", "newco", "--roles", "reader,admin"], ["--roles", "'admin'", "nothing was created"]),
    (["tenants", "create", "newco", "--roles", ","], ["--roles names no role"]),
    (["tenants", "describe"], ["needs a tenant NAME"]),
    (["tenants", "list", "acme"], ["list takes no NAME"]),
    (["tenants", "create", "Bad Name"], ["invalid tenant name"]),
    (["privacy", "file", "acme", "--type", "erase"], ["--subject"]),
    (["privacy", "status", "acme"], ["--request-id"]),
    (["store", "Not A Tenant"], ["invalid tenant name"]),
])
def test_argument_errors_are_status_2_before_anything_is_contacted(argv, words):
    # Everything is down: a refused argument must not even reach the probes (status 2, not 3).
    r = run(*argv, env=BOTH_DOWN)
    assert_one_line(r, EXIT_USAGE, *words)


# ---------------------------------------------------------------- a closed pipe

@pytest.mark.parametrize("argv", [["topics", "list"], ["schemas", "list"], ["--help"]])
def test_output_to_a_closed_pipe_ends_quietly_with_141(argv):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte (as after `| head -1` has its line)
    try:
        r = subprocess.run([sys.executable, "-m", "streams.cli.main", *argv], stdout=write_end,
                           stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=60,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        os.close(write_end)
    assert r.stderr == ""
    # argparse itself ignores write errors of --help (so 0 there); the commands end with 141.
    assert r.returncode == (0 if argv == ["--help"] else EXIT_BROKEN_PIPE)


def test_a_shell_pipeline_into_head_shows_no_error():
    # A real `| head -1`: the listing is longer than what head reads.
    r = subprocess.run(["bash", "-c", f"{sys.executable} -m streams.cli.main topics list | head -1; "
                                      "echo \"status=${PIPESTATUS[0]}\" >&2"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert len(r.stdout.splitlines()) == 1
    status = r.stderr.strip().splitlines()[-1]
    assert status in ("status=0", f"status={EXIT_BROKEN_PIPE}"), r.stderr
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr


# ---------------------------------------------------------------- web port

def test_worker_refuses_a_taken_web_port_in_one_line():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        r = run("worker", env={**BOTH_DOWN, "STREAMS_WEB_PORT": str(port)})
        assert_one_line(r, EXIT_USAGE, f"web port {port} is taken", "STREAMS_WEB_PORT", "STREAMS_WEB_ENABLED=0")
        r = run("worker", "--web-port", str(port), env=BOTH_DOWN)
        assert_one_line(r, EXIT_USAGE, f"web port {port} is taken", "--web-port")
        # Without the HTTP server the port does not matter: the worker goes on (and finds Redis down).
        r = run("worker", env={**BOTH_DOWN, "STREAMS_WEB_PORT": str(port), "STREAMS_WEB_ENABLED": "0"})
        assert_one_line(r, EXIT_UNREACHABLE, "Redis is unreachable")
    finally:
        holder.close()


# ---------------------------------------------------------------- help and wording

def test_every_command_help_states_what_it_does_and_its_exit_statuses():
    for cmd in _subcommands():
        r = run(cmd, "--help")
        assert r.returncode == 0, cmd
        text = " ".join(r.stdout.split())
        assert "exit status: 0 done" in text and "3 Kafka, Redis or the audit trail unreachable: the message names which" in text, cmd
        description = text.split("positional arguments")[0].split("options:")[0]
        assert len(description) > len(f"usage: streams {cmd}") + 60, (cmd, description)  # says what it does


def test_help_names_when_a_command_exits_1():
    # ... and only those commands name status 1 at all.
    assert "0 done 2 bad argument" in " ".join(run("store", "--help").stdout.split())
    for cmd, words in [("audit", "a chain is broken"), ("publish", "some events were not acknowledged"),
                       ("privacy", "file --wait: the receipt did not come in time"),
                       ("schemas", "lint found an unannotated field")]:
        text = " ".join(run(cmd, "--help").stdout.split())
        assert f"exit status: 0 done 1 {words}" in text, cmd


@pytest.mark.parametrize("n,word,expected", [
    (0, "event", "0 events"), (1, "event", "1 event"), (2, "event", "2 events"),
    (1, "subject key", "1 subject key"), (3, "subject key", "3 subject keys"),
    (1, "entry", "1 entry"), (2, "entry", "2 entries"), (2, "key", "2 keys"), (2, "day", "2 days"),
    (2, "process", "2 processes"), (2, "person", "2 people"),
])
def test_plural(n, word, expected):
    many = "people" if word == "person" else None
    assert plural(n, word, many) == expected


def test_no_count_in_cli_output_is_pluralised_by_hand():
    # Every "{n} things" of the CLI goes through plural(): no literal "s" after a count placeholder.
    import re

    for path in [*sorted((ROOT / "streams/cli").glob("*.py")), ROOT / "streams/audit/cli.py"]:
        text = path.read_text()
        hand_made = re.findall(r"\{[^{}]*(?:len\(|count|acked|rewrapped|records)[^{}]*\} [a-z]+s\b", text)
        assert not hand_made, (path.name, hand_made)
        assert "'s' if" not in text, path.name
