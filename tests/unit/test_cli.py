"""The command line: --help on every command, clear errors for bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest

from streams.cli.main import build_parser, main


def _subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sorted(action.choices)


def test_every_command_has_help():
    commands = _subcommands()
    assert {"stack", "topics", "worker", "publish", "tail", "dlq", "store", "schemas", "demo"} <= set(commands)
    for cmd in commands:
        out = subprocess.run([sys.executable, "-m", "streams.cli.main", cmd, "--help"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, cmd
        assert f"usage: streams {cmd}" in out.stdout
        assert "STREAMS_" in out.stdout  # points at the configuration


def test_top_level_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "streams.cli.main", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for cmd in _subcommands():
        assert cmd in out.stdout


def test_bad_tenant_name_is_a_clear_error(capsys):
    assert main(["store", "Not A Tenant", "--count"]) == 2
    err = capsys.readouterr().err
    assert "invalid tenant name" in err and "Traceback" not in err


def test_bad_setting_is_a_clear_error(capsys, monkeypatch):
    monkeypatch.setenv("STREAMS_BATCH_SIZE", "lots")
    assert main(["topics", "list"]) == 2
    assert "STREAMS_BATCH_SIZE must be an integer" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["avro", "json"])
def test_publish_of_a_file_with_a_bad_event_publishes_nothing(tmp_path, capsys, monkeypatch, fmt):
    # Points at a port where no broker listens: nothing may even be attempted.
    monkeypatch.setenv("STREAMS_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    f = tmp_path / "events.jsonl"
    f.write_text('{"schema": "customer_signup", "email": "x@example.com"}\n')
    assert main(["publish", str(f), "--format", fmt]) == 2
    err = capsys.readouterr().err
    assert "event 1" in err and "nothing was published" in err
    assert "x@example.com" not in err


def test_publish_of_unreadable_json_names_the_line(tmp_path, capsys):
    f = tmp_path / "events.jsonl"
    f.write_text('{"schema": "order_placed"}\nnot json\n')
    assert main(["publish", str(f)]) == 2
    assert ":2: not JSON" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["stack", "sideways"], ["publish"], ["store"]])
def test_argparse_errors_exit_2(argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


# ---------------------------------------------------------------- apikeys (the flows: tests/e2e/test_cli_apikeys.py)

TOKEN = "stk_0123456789ab_" + "S" * 43


@pytest.mark.parametrize("argv,message", [
    (["apikeys", "create"], "create needs --role"),
    (["apikeys", "create", "--role", "operator", "--tenant", "acme"], "operator keys belong to no tenant"),
    (["apikeys", "create", "--role", "reader"], "a reader key belongs to one tenant"),
    (["apikeys", "create", "--role", "detokenizer"], "a detokenizer key belongs to one tenant"),
    (["apikeys", "create", "--role", "operator", "--label", "a\nb"], "--label"),
    (["apikeys", "create", "0123456789ab", "--role", "operator"], "create takes no KEY_ID"),
    (["apikeys", "revoke"], "revoke needs the KEY_ID"),
    (["apikeys", "revoke", "XYZ"], "12 lowercase hex characters"),
    (["apikeys", "revoke", TOKEN], "not its token"),
    (["apikeys", "revoke", "0123456789ab", "--role", "reader"], "revoke takes only the KEY_ID"),
    (["apikeys", "list", "--role", "reader"], "list takes only --tenant"),
    (["apikeys", "list", "--tenant", "Not A Tenant"], "invalid tenant name"),
])
def test_apikeys_bad_arguments_are_clear_errors_before_any_io(argv, message, capsys, monkeypatch):
    # Nothing listens there: an argument error must be found before anything is contacted.
    monkeypatch.setenv("STREAMS_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    monkeypatch.setenv("STREAMS_REDIS_URL", "redis://127.0.0.1:1/0")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert "S" * 43 not in err  # a pasted token is never echoed


def test_apikeys_help_explains_roles_and_that_the_token_is_shown_once():
    out = subprocess.run([sys.executable, "-m", "streams.cli.main", "apikeys", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    for words in ("operator", "reader", "detokenizer", "create", "list", "revoke", "printed once", "hash",
                  "audit trail", "--tenant", "--role"):
        assert words in text, words
    with pytest.raises(SystemExit):
        main(["apikeys", "create", "--role", "admin"])
