"""What every command module shares: registering a subcommand, settings, the dependency probe, who acts.

Each ``streams/cli/<group>.py`` has ``register(sub)``, which adds its
subcommand(s) with ``add_command`` and points them at their handlers;
``streams.cli.main`` lists the modules and turns errors into exit statuses.
Nothing here may import ``streams.cli.main``: ``python -m streams.cli.main``
runs that file as ``__main__``, and it would then be loaded twice.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Union

from streams.cli import deps
from streams.cli.errors import UsageError, exit_codes_help
from streams.settings import Settings, SettingsError

EPILOG = """configuration comes from STREAMS_* environment variables (see README.md,
"Configuration"); defaults talk to the local stack that `streams stack up` runs."""

#: What a command needs reachable (``deps.KAFKA``, ``REDIS``, ``AUDIT``), or a function of its arguments giving it.
Needs = Union[tuple[str, ...], Callable[[argparse.Namespace], tuple[str, ...]]]

#: The subparsers action of ``streams``, which each module's ``register`` adds to (argparse keeps its class private).
Subparsers = argparse._SubParsersAction

K, R, A = deps.KAFKA, deps.REDIS, deps.AUDIT


def add_command(sub: Subparsers, name: str, help: str,
                fn: Callable[[argparse.Namespace], int], desc: str | None = None, *, needs: Needs = (),
                exit1: str = "", own_logging: bool = False) -> argparse.ArgumentParser:
    """Add one subcommand running ``fn``, with the shared epilog (configuration, exit statuses).

    ``needs``: what is probed before ``fn`` reads or writes (or a function of
    the arguments giving it); ``exit1``: when the command exits with status 1,
    for its --help; ``own_logging``: the command configures logging itself, so
    ``main`` leaves the Kafka clients' log lines alone.
    """
    sp = sub.add_parser(name, help=help, description=desc or help,
                        epilog=EPILOG + "\n\n" + exit_codes_help(exit1),
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.set_defaults(fn=fn, needs=needs, own_logging=own_logging)
    return sp


def settings() -> Settings:
    """The settings from the environment; a bad one is a usage error (status 2), not a traceback."""
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise UsageError(str(exc)) from None


def ready(args: argparse.Namespace, s: Settings) -> None:
    """Probe what the command needs (``needs`` in the parser), once, in a few seconds at most.

    Each command calls it after checking its arguments and before its first
    read or write: a bad argument is status 2 whatever is down, and a command
    whose Kafka, Redis or audit trail is down stops with status 3 having
    changed nothing.
    """
    if getattr(args, "probed", False):
        return
    needs = args.needs(args) if callable(args.needs) else args.needs
    deps.probe(s, needs)
    args.probed = True


def user() -> str:
    """The login name, the default actor; "unknown" where the platform cannot tell."""
    import getpass

    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def writer() -> str:
    """The audit writer (signing identity) of this CLI process: its login, never the --actor claim."""
    from streams.audit.signing import writer_name

    return writer_name("cli", user())


def actor(args: argparse.Namespace) -> str:
    """Who the audit trail names as acting: ``cli:`` and --actor, or the login name."""
    return f"cli:{args.actor or user()}"


def onboarded_tenant(s: Settings, name: str, args: argparse.Namespace) -> str:
    """``name`` checked and known to the tenant directory (probing first); else a usage error naming those known."""
    from streams.connections import Purpose, redis_client
    from streams.tenancy.names import validate_tenant_name
    from streams.tenancy.registry import TenantDirectory

    tenant = validate_tenant_name(name)
    ready(args, s)
    known = TenantDirectory(s.tenants, dict(s.tenant_regimes), redis_client(s, Purpose.CLI))
    if tenant not in known:
        raise UsageError(f"unknown tenant {tenant} (onboarded: {', '.join(known)})")
    return tenant


def print_result(result: dict[str, Any], kept: str) -> None:
    """Print a service's result as JSON; when it holds credentials, first warn on stderr that they show once.

    ``kept``: what is stored instead of them, for the warning.
    """
    if result.get("credentials"):
        print(f"credentials below are shown once; store them now (only {kept} are kept)", file=sys.stderr)
    print(json.dumps(result, indent=2))
