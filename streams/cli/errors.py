"""Errors and exit statuses of the command line.

Every command ends with one of these statuses; ``main`` turns the typed
exceptions below (and the library errors it knows) into one line on stderr and
the status, never a traceback:

====  =====================================================================
0     done
1     the command ran and reports a negative outcome (an audit chain is
      broken, a request is not done yet, some events were not acknowledged)
2     a problem to fix in the command line or the settings (bad argument,
      unknown tenant, missing --yes, web port in use); nothing was changed
3     a dependency is unreachable: Kafka, Redis or the audit trail; the line
      names which and the setting to check
130   interrupted (Ctrl-C)
141   the reader of standard output went away (``streams ... | head -1``):
      128 + SIGPIPE, what a shell reports for a command killed by SIGPIPE
====  =====================================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

def exit_codes_help(exit1: str = "") -> str:
    """The exit statuses for a command's --help (short; the table above is the reference).

    ``exit1``: when that command exits with 1; commands without one never do.
    """
    one = f"  1    {exit1}\n" if exit1 else ""
    return ("exit status:\n  0    done\n" + one
            + "  2    bad argument or setting; nothing was changed\n"
            "  3    Kafka, Redis or the audit trail unreachable: the message names which, the\n"
            "       STREAMS_* setting to check, and anything already done (usually nothing)\n"
            "  130  interrupted;  141  output pipe closed (`streams ... | head`)")


class CliError(Exception):
    """A failure the CLI reports as one line on stderr with ``exit_code``."""

    exit_code = EXIT_USAGE


class UsageError(CliError):
    """A problem the user can fix; printed as one line, exit status 2."""

    exit_code = EXIT_USAGE


class Unreachable(CliError):
    """A dependency (Kafka, Redis, the audit trail) cannot be reached or does not answer; exit status 3.

    ``what`` names the dependency, ``where`` its address (no secrets),
    ``settings`` the STREAMS_* variables to check, ``detail`` the cause.
    """

    exit_code = EXIT_UNREACHABLE

    def __init__(self, what: str, where: str, settings: str, detail: str, hint: str = "") -> None:
        self.what, self.where, self.settings, self.detail = what, where, settings, detail
        detail = " ".join(detail.split())  # one line, whatever the library put in its message
        msg = f"{what} is unreachable at {where} ({detail}); check {settings}"
        super().__init__(msg + (f" ({hint})" if hint else ""))
