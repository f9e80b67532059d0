"""The one error boundary of the ``kpx`` command line: which failure exits with which code.

=====  ===========================================================================
code   meaning
=====  ===========================================================================
0      ok
1      refused or failed: a business rule refused (``Refusal``), something asked for
       does not exist (``NotFound``), a check failed (``verify``, ``check``, ``drain``,
       a refused ``submit`` line), or any other permanent kpx error
2      usage or configuration: a bad option or argument, a missing or bad setting
       (``ConfigError``), an unreadable key file (``KeyFileError``)
3      service unavailable: RabbitMQ, PostgreSQL or the registry's public log over HTTP
       does not answer (``TransientError`` after its bounded retries)
130    interrupted (Ctrl-C)
=====  ===========================================================================

Commands raise kpx errors and let them go; only :func:`exchange.app.cli.main` turns them into
one line on stderr and an exit code, through :func:`exit_code`. A command that ends with a
failed check (no exception) exits with :attr:`ExitCode.FAILED` itself. Anything else is a
bug and leaves with its traceback.
"""

from __future__ import annotations

from enum import IntEnum

from exchange.errors import ConfigError, KeyFileError, KpxError, Refusal, TransientError


class ExitCode(IntEnum):
    """The exit codes of ``kpx`` (the table above; the README repeats it)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    UNAVAILABLE = 3
    INTERRUPTED = 130


def exit_code(exc: KpxError) -> ExitCode:
    """The exit code of a kpx error that reached the command line."""
    if isinstance(exc, ConfigError | KeyFileError):
        return ExitCode.USAGE
    if isinstance(exc, TransientError):
        return ExitCode.UNAVAILABLE
    return ExitCode.FAILED


def message(exc: KpxError) -> str:
    """The one line printed for a kpx error: what kind of failure, and the error's sentence."""
    if isinstance(exc, Refusal):
        return _one_line(f"kpx: refused {exc.code} {exc.sentence}")
    kind = "service unavailable" if isinstance(exc, TransientError) else type(exc).__name__
    return _one_line(f"kpx: {kind}: {exc}")


def _one_line(text: str) -> str:
    # Driver messages (psycopg2's) span lines; a log collector keeps one line together.
    return " ".join(text.split())
