"""``streams``: the one command line of the project. ``streams <command> --help`` explains each command.

Each command lives in a module of its group (``COMMANDS`` below, in the order
``streams --help`` lists them), whose ``register`` adds its subcommand(s) and
whose handlers parse nothing themselves: argparse does, and they call into the
package. Before a command reads or writes it probes what it needs (Kafka,
Redis, the audit trail: ``needs`` in its parser, ``streams.cli.base``); this
module then turns every error it knows into one line on stderr and an exit
status (``streams.cli.errors`` lists them), never a traceback. Nothing prints
event payloads except ``tail`` and ``store``, whose job it is to show clean
events.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from types import ModuleType
from typing import Iterator, Sequence

from streams.settings import Settings, SettingsError

# Defined in their own modules: `python -m streams.cli.main` runs this file as
# __main__, and a class defined here would then exist twice.
from streams.cli import (  # noqa: E402
    apikeys,
    audit,
    deps,
    demo,
    detokenize,
    dlq,
    keys,
    principals,
    privacy,
    publish,
    schemas,
    stack,
    store,
    tail,
    tenants,
    topics,
    worker,
)
from streams.cli.base import EPILOG  # noqa: E402
from streams.cli.errors import (  # noqa: E402
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    CliError,
    UsageError,
    exit_codes_help,
)

#: The command modules, each with ``register(sub)``; their order is the order of ``streams --help``.
COMMANDS: tuple[ModuleType, ...] = (stack, topics, worker, publish, tail, dlq, store, schemas, detokenize, privacy,
                                    keys, audit, tenants, principals, apikeys, demo)


def build_parser() -> argparse.ArgumentParser:
    """The ``streams`` parser with every command of ``COMMANDS``."""
    p = argparse.ArgumentParser(
        prog="streams",
        description="Privacy-first multi-tenant event pipeline on Kafka: run the stack and workers, "
                    "publish events, read tenant streams, the DLQ and the store.",
        epilog=EPILOG + "\n\n" + exit_codes_help("the command ran and its outcome is negative (each command's "
                                                  "--help says when)"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(sub)
    return p


def _known_error(exc: BaseException) -> CliError | None:
    """The one-line error a library exception means for the user, or None for a bug (which keeps its traceback)."""
    from streams.audit.exceptions import AuditError
    from streams.devstack.exceptions import StackError
    from streams.ops.exceptions import OpsError
    from streams.privacy.exceptions import PrivacyError
    from streams.schema.exceptions import SchemaError
    from streams.tenancy.exceptions import TenancyError

    try:
        s = Settings.from_env()
    except SettingsError:
        s = None
    if s is not None:
        unreachable = deps.translate(exc, s)
        if unreachable is not None:
            return unreachable
    if isinstance(exc, (OpsError, StackError, SchemaError, TenancyError, AuditError, PrivacyError)):
        return UsageError(str(exc))
    return None


def _stdout_gone() -> int:
    # The reader of our output went away (`streams tail acme | head -1`). Like a command killed by
    # SIGPIPE, end quietly with 141 (128 + SIGPIPE) - so `set -o pipefail` scripts can still tell -
    # and point stdout at /dev/null so that the interpreter's final flush does not fail again.
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE


@contextlib.contextmanager
def _quiet_client_logs(quiet: bool) -> Iterator[None]:
    """Keep librdkafka's log lines ("FAIL ... Connection refused", one per retry) off a command's stderr.

    Without a configured handler Python prints warnings of the project's Kafka
    loggers as they come; a command reports a failure as its one line instead.
    Restored afterwards (``main`` also runs inside tests). Commands that
    configure their own logging (``own_logging``: the worker, the demo) keep
    these lines.
    """
    if not quiet:
        yield
        return
    kafka_log = logging.getLogger("streams.kafka")
    null = logging.NullHandler()
    saved = kafka_log.propagate
    kafka_log.addHandler(null)
    kafka_log.propagate = False
    try:
        yield
    finally:
        kafka_log.removeHandler(null)
        kafka_log.propagate = saved


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status (``streams.cli.errors``). Errors are one line on stderr."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit:  # --help, or an argparse error (status 2): its output may meet a closed pipe too
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            raise SystemExit(_stdout_gone()) from None
        raise
    except BrokenPipeError:
        return _stdout_gone()
    try:
        with _quiet_client_logs(not args.own_logging):
            status = args.fn(args)
        sys.stdout.flush()  # inside the try: with a pipe, a closed reader shows here
        return status
    except BrokenPipeError:
        return _stdout_gone()
    except KeyboardInterrupt:
        print(f"streams {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except CliError as exc:
        print(f"streams {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        known = _known_error(exc)
        if known is None:
            raise
        print(f"streams {args.command}: {known}", file=sys.stderr)
        return known.exit_code


if __name__ == "__main__":
    sys.exit(main())
