"""Every package under ``streams/`` says in its ``__init__.py`` what it owns and what it must not do.

A newcomer deciding where a change goes reads these first (README "Layout" is the map, these are
the rules). Parsed with ``ast``: nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.unit.test_import_graph import import_graph

ROOT = Path(__file__).resolve().parents[2] / "streams"

#: Packages whose docstring does not yet state a "must not" rule, each with why. A listed one that
#: has gained its rule fails too, so the list only shrinks.
NO_RULE_YET: dict[str, str] = {
    "streams.api": "api/ is being split in its own branch (REVIEW-structure move 7)",
}

#: The only packages that may import the local development stack (``streams.devstack``).
DEVSTACK_USERS = ("streams.cli.", "streams.devstack.")


def _packages() -> dict[str, Path]:
    """Every folder under streams/ holding Python source, by dotted name."""
    out = {}
    for folder in [ROOT, *sorted(p for p in ROOT.rglob("*") if p.is_dir())]:
        if folder.name == "__pycache__" or not any(folder.glob("*.py")):
            continue
        out[".".join(folder.relative_to(ROOT.parent).parts)] = folder
    return out


def _docstring(folder: Path) -> str:
    init = folder / "__init__.py"
    return (ast.get_docstring(ast.parse(init.read_text())) or "") if init.exists() else ""


def test_the_packages_are_found():
    packages = _packages()
    assert {"streams", "streams.sinks", "streams.erasure", "streams.privacy.transforms"} <= set(packages)


def test_every_package_has_an_init_with_a_paragraph():
    missing = [name for name, folder in _packages().items() if not (folder / "__init__.py").exists()]
    assert not missing, f"packages without __init__.py: {missing}"
    short = [name for name, folder in _packages().items() if len(_docstring(folder).split()) < 20]
    assert not short, f"__init__.py without a paragraph saying what the package owns: {short}"


def test_every_package_says_what_it_must_not_do():
    def has_rule(text: str) -> bool:
        text = " ".join(text.split())  # a rule may be wrapped across lines
        return "must not" in text or "must never" in text

    without = {name for name, folder in _packages().items() if not has_rule(_docstring(folder))}
    new = sorted(without - set(NO_RULE_YET))
    assert not new, f"docstrings without a 'must not' rule: {new}"
    gone = sorted(set(NO_RULE_YET) - without)
    assert not gone, f"rule written, remove from NO_RULE_YET: {gone}"


def test_only_the_cli_imports_the_devstack():
    # The local stack is a development harness: the worker and the library run on a deployed
    # broker and Redis, so nothing of theirs may depend on it.
    users = sorted(m for m, deps in import_graph().items()
                   if any(d.startswith("streams.devstack") for d in deps) and not m.startswith(DEVSTACK_USERS))
    assert not users, f"modules importing streams.devstack: {users}"
