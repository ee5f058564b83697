"""``streams schemas``: list the schemas, lint their PII annotations, derive or check the clean schemas."""

from __future__ import annotations

import argparse
import json
import sys

from streams.cli.base import Subparsers, add_command, settings
from streams.cli.text import plural


def register(sub: Subparsers) -> None:
    sp = add_command(sub, "schemas", "list schemas, lint their PII annotations, derive or check the clean schemas",
                     cmd_schemas,
                     "list: schemas and fingerprints. lint: fail on a field that looks like personal data but has "
                     "no 'pii' annotation. derive: regenerate schemas/clean/ from the raw schemas and their privacy "
                     "policy. check: fail if schemas/clean/ is out of date.",
                     exit1="lint found an unannotated field, or check found stale clean schemas")
    sp.add_argument("action", choices=["list", "lint", "derive", "check"])


def cmd_schemas(args: argparse.Namespace) -> int:
    from streams.schema.clean import stale_clean, write_clean_dir
    from streams.schema.registry import SchemaRegistry

    s = settings()
    raw = SchemaRegistry.load_dir(s.schemas_dir)
    clean_dir = s.schemas_dir / "clean"
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
