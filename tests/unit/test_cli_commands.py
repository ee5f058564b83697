"""The command table: every group module registers commands, every command has --help, choices come from enums.

The wording and exit statuses of each command are tested in test_cli.py and
test_cli_errors.py; this file checks the structure of ``streams.cli``.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import streams.cli
from streams.api.api_keys import Role
from streams.cli.main import COMMANDS, build_parser, main
from streams.consent import request_types
from streams.consent.requests import PURPOSES
from streams.consent.state import Regime
from streams.tenancy.principals import ROLES as STAFF_ROLES
from streams.tenancy.registry import REGIMES

CLI_DIR = Path(streams.cli.__file__).parent


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _commands() -> dict[str, argparse.ArgumentParser]:
    return _subparsers(build_parser())


def _option(cmd: str, dest: str) -> argparse.Action:
    return next(a for a in _commands()[cmd]._actions if a.dest == dest)


@pytest.mark.parametrize("module", COMMANDS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_every_command_module_registers_at_least_one_command(module):
    parser = argparse.ArgumentParser(prog="streams")
    sub = parser.add_subparsers(dest="command")
    module.register(sub)
    registered = _subparsers(parser)
    assert registered, module.__name__
    for name, sp in registered.items():
        handler = sp.get_default("fn")
        assert handler is not None and handler.__module__ == module.__name__, name  # its handler lives beside it


def test_every_module_with_register_is_in_the_command_table():
    # A new command module that is not listed in COMMANDS would silently not exist.
    with_register = set()
    for info in pkgutil.iter_modules([str(CLI_DIR)]):
        if info.name == "main":
            continue
        module = importlib.import_module(f"streams.cli.{info.name}")
        if callable(getattr(module, "register", None)):
            with_register.add(module.__name__)
    assert with_register == {m.__name__ for m in COMMANDS}


def test_command_names_are_unique_across_modules():
    names: list[str] = []
    for module in COMMANDS:
        parser = argparse.ArgumentParser()
        module.register(parser.add_subparsers())
        names += list(_subparsers(parser))
    assert len(names) == len(set(names)) == len(_commands())


@pytest.mark.parametrize("cmd", sorted(_commands()))
def test_help_of_every_command_exits_0(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        main([cmd, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: streams {cmd}") and "exit status:" in out


def test_top_level_help_exits_0_and_lists_the_commands_in_table_order(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    positions = [out.index(f"\n    {name}") for name in _commands()]
    assert positions == sorted(positions)


# ---------------------------------------------------------------- choices come from the enums


def test_privacy_types_are_the_request_types():
    assert list(_option("privacy", "type").choices) == list(request_types.names())
    # The description explains each type: a new member must be explained too.
    desc = _commands()["privacy"].description
    for t in request_types.kinds():
        assert t.name in desc and t.doc in desc, t
    assert all(p in _option("privacy", "purpose").help for p in PURPOSES)


def test_apikey_roles_are_the_key_roles():
    assert set(_option("apikeys", "role").choices) == {r.value for r in Role}
    desc = _commands()["apikeys"].description
    assert all(r.value in desc for r in Role)


def test_tenant_regimes_and_roles_come_from_their_owners():
    assert list(_option("tenants", "regime").choices) == list(REGIMES)
    assert set(REGIMES) == {r.value for r in Regime}  # the registry's list and the consent enum agree
    roles_help = _option("tenants", "roles").help
    for r in Role:
        assert (r.value in roles_help) == (r is not Role.OPERATOR), r


def test_staff_roles_are_the_principals_roles():
    assert list(_option("principals", "role").choices) == list(STAFF_ROLES)


def test_no_command_module_spells_out_enum_values_as_choices():
    # Two or more members of one enum in a literal `choices=[...]` is a copy that a new member would miss.
    # (One alone may be a verb that happens to match, like `apikeys revoke`.)
    sets = [set(request_types.names())] + [{m.value for m in e} for e in (Role, Regime)] + [set(STAFF_ROLES)]
    for path in sorted(CLI_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "choices" and isinstance(node.value, (ast.List, ast.Tuple)):
                literals = {e.value for e in node.value.elts if isinstance(e, ast.Constant)}
                for values in sets:
                    assert len(literals & values) < 2, (path.name, node.lineno, sorted(literals & values))


# ---------------------------------------------------------------- size


def test_command_modules_and_functions_stay_small():
    # A function over 60 lines says why at its top (a comment or docstring line "Long because ...").
    for path in sorted(CLI_DIR.glob("*.py")):
        text = path.read_text()
        assert len(text.splitlines()) <= 400, path.name
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                head = "\n".join(text.splitlines()[node.lineno - 1:node.lineno + 6])
                assert length <= 60 or "Long because" in head, (path.name, node.name, length)
