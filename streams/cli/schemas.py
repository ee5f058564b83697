"""``streams schemas``: list the schemas, lint their PII annotations, derive or check the clean schemas,
check a change against git history (``compat``: the rules are in ``streams.schema.compat``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from streams.cli.base import Subparsers, add_command, settings
from streams.cli.errors import UsageError
from streams.cli.text import plural


def register(sub: Subparsers) -> None:
    sp = add_command(sub, "schemas", "list schemas, lint their PII annotations, derive or check the clean schemas, "
                     "check a change against git history", cmd_schemas,
                     "list: every version of every schema, with its fingerprint. lint: fail on a field of a latest "
                     "version that looks like personal data but has no 'pii' annotation. derive: regenerate "
                     "schemas/clean/<type>/v<N>.avsc from each raw version and its privacy policy. check: fail if "
                     "schemas/clean/ is out of date.\n\n"
                     "compat [--against REF]: compare the schemas now with those at git REF (default HEAD~1; HEAD "
                     "in a clone without that history): a published version removed or edited in place, a new raw "
                     "version that cannot read events of an earlier one (backward, transitive), a new clean version "
                     "not fully compatible with every earlier one, a field's privacy treatment weakened without a "
                     "dated waiver, or clean schemas out of date: one line each, naming the schema, version and "
                     "field. See README, 'Schema changes step by step'.",
                     exit1="lint found an unannotated field, check found stale clean schemas, or compat found an "
                           "incompatible change")
    sp.add_argument("action", choices=["list", "lint", "derive", "check", "compat"])
    sp.add_argument("--against", metavar="REF", help="compat: the git ref to compare with (default HEAD~1)")


def cmd_schemas(args: argparse.Namespace) -> int:
    from streams.schema.clean import stale_clean, write_clean_dir
    from streams.schema.registry import SchemaRegistry

    s = settings()
    if args.against is not None and args.action != "compat":
        raise UsageError("--against is for `streams schemas compat`")
    raw = SchemaRegistry.load_dir(s.schemas_dir)
    clean_dir = s.schemas_dir / "clean"
    if args.action == "compat":
        return _compat(s.schemas_dir, args.against)
    if args.action == "derive":
        for p in write_clean_dir(raw, clean_dir):
            print(f"wrote {p}")
        return 0
    if args.action == "lint":
        from streams.privacy.lint import lint_schema

        # The latest versions only: every event is read as its type's latest version, whichever it was written with.
        findings = [f for e in raw for f in lint_schema(json.loads(e.path.read_text()) if e.path else e.source,
                                                        _where(e))]
        for f in findings:
            print(f, file=sys.stderr)
        if findings:
            return 1
        print(f"{plural(len(raw), 'schema')}: every PII-looking field is annotated")
        return 0
    if args.action == "check":
        stale = stale_clean(raw, clean_dir)
        if stale:
            print(f"clean schemas out of date: {', '.join(stale)}; run `streams schemas derive`", file=sys.stderr)
            return 1
        print("clean schemas are up to date")
        return 0
    for e in raw.all_versions():
        latest = " (latest)" if raw.current(e) is e else ""
        print(f"{e.event_type:<18} v{e.version:<3} {e.fullname:<40} fingerprint={e.fingerprint_hex}{latest}")
    return 0


def _where(entry) -> str:
    return f"{entry.path.parent.name}/{entry.path.name}" if entry.path else entry.fullname


def _compat(schemas_dir: Path, against: str | None) -> int:
    from streams.schema.compat import check
    from streams.schema.history import HistoryError, has_commit, versions_at, versions_in, work_tree

    ref = against or "HEAD~1"
    clean_dir = schemas_dir / "clean"
    try:
        if against is None and not has_commit(work_tree(schemas_dir), ref):
            # A clone without history (CI's shallow checkout) or a repository's first commit.
            print("no HEAD~1 here (a clone without history?): comparing against HEAD", file=sys.stderr)
            ref = "HEAD"
        base_raw, base_clean = versions_at(ref, schemas_dir), versions_at(ref, clean_dir)
    except HistoryError as exc:
        raise UsageError(str(exc)) from None
    problems = check(base_raw, base_clean, versions_in(schemas_dir), versions_in(clean_dir))
    for p in problems:
        print(p)
    if problems:
        print(f"{plural(len(problems), 'incompatible change')} against {ref}", file=sys.stderr)
        return 1
    print(f"schemas compatible with {ref}")
    return 0
