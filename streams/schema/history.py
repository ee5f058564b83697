"""The schema versions in a directory now, and in the same directory at a git ref (``streams schemas compat``).

At a ref from before schemas were versioned (``schemas/<type>.avsc``), each file counts as
version 1 of its type: the move to ``<type>/v1.avsc`` is then no change at all.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from streams.schema.compat import Versions
from streams.schema.exceptions import SchemaError
from streams.schema.registry import VERSION_FILE, read_source, version_files


class HistoryError(SchemaError):
    """The ref cannot be read: not a git work tree, an unknown ref, git missing."""


def versions_in(directory: Path) -> Versions:
    """The versions under ``directory`` (``<type>/v<N>.avsc``), read as JSON."""
    out: Versions = {}
    if Path(directory).is_dir():
        for event_type, version, path in version_files(directory):
            out.setdefault(event_type, {})[version] = read_source(path)
    return out


def _git(cwd: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HistoryError(f"git {args[0]} failed: {exc}") from None
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
        raise HistoryError(f"git {' '.join(args)}: {last}")
    return done.stdout


def has_commit(directory: Path, ref: str) -> bool:
    """Whether ``ref`` names a commit of the git repository ``directory`` is in."""
    try:
        _git(_existing(Path(directory).resolve()), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        return True
    except HistoryError:
        return False


def _existing(directory: Path) -> Path:
    while not directory.is_dir():
        directory = directory.parent
    return directory


def work_tree(directory: Path) -> Path:
    """The top of the git work tree ``directory`` is in; HistoryError when it is in none."""
    return Path(_git(_existing(Path(directory).resolve()), "rev-parse", "--show-toplevel").strip()).resolve()


def versions_at(ref: str, directory: Path) -> Versions:
    """The versions under ``directory`` as they were at git ``ref`` (nothing there: empty).

    Raises HistoryError when ``directory`` is not in a git work tree or ``ref`` names no commit.
    """
    directory = Path(directory).resolve()
    top = work_tree(directory)
    if not has_commit(top, ref):
        raise HistoryError(f"no commit {ref!r} in the git repository {top}")
    try:
        rel = directory.relative_to(top).as_posix()
    except ValueError:
        raise HistoryError(f"{directory} is not inside the git work tree {top}") from None
    listing = _git(top, "ls-tree", "-r", "--name-only", ref, "--", rel).splitlines()
    out: Versions = {}
    for name in listing:
        parts = name[len(rel) + 1:].split("/") if rel != "." else name.split("/")
        if len(parts) == 1 and parts[0].endswith(".avsc"):  # before versions: <type>.avsc is v1
            event_type, version = parts[0][:-len(".avsc")], 1
        elif len(parts) == 2 and (m := VERSION_FILE.fullmatch(parts[1])):
            event_type, version = parts[0], int(m.group(1))
        else:
            continue
        text = _git(top, "show", f"{ref}:{name}")
        try:
            out.setdefault(event_type, {})[version] = json.loads(text)
        except json.JSONDecodeError as exc:
            raise HistoryError(f"{ref}:{name} is not valid JSON: {exc}") from None
    return out
