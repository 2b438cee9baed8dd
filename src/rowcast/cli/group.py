"""The ``rowcast`` group: the commands of `rowcast.cli` join it, and its errors end them.

No traceback reaches a user:

* a `RowcastError` (bad input, a server unreachable or unfit) ends any command with
  ``error: <message>`` on stderr and exit status 2;
* click's own usage errors keep click's message and exit status 2, Ctrl-C click's
  ``Aborted!`` and status 1;
* anything else is a bug: one paragraph naming the command and the error, asking to
  run again with ``ROWCAST_DEBUG=1`` (which prints the traceback too) and to report
  it, and exit status 70 (``EX_SOFTWARE``);
* a closed stdout (``rowcast events read @all | head``) ends the command quietly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from typing import Any

import click

from .. import __version__, _speedups
from ..errors import RowcastError
from .console import print_error

__all__ = ["BUG", "debugging", "main"]

BUG = 70  # sysexits.h EX_SOFTWARE: an internal error

# drivers that log, with a traceback, errors that rowcast reports itself in one line
_NOISY = ("pika",)
_OFF = frozenset({"", "0", "false", "no", "off"})


def debugging() -> bool:
    """Whether ``ROWCAST_DEBUG`` asks for tracebacks (set, and not 0/false/no/off)."""
    return os.environ.get("ROWCAST_DEBUG", "").strip().lower() not in _OFF


class _Group(click.Group):
    """Turns errors into one paragraph on stderr and an exit status (module docstring)."""

    def invoke(self, ctx: click.Context) -> Any:
        debug = debugging()
        given = [*getattr(ctx, "_protected_args", ()), *ctx.args]  # consumed by invoke
        if not debug:
            for name in _NOISY:
                logging.getLogger(name).setLevel(logging.CRITICAL)
        try:
            return super().invoke(ctx)
        except RowcastError as error:
            if debug:
                traceback.print_exc()
            print_error(error)
            ctx.exit(2)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise  # click prints these and picks the status (2 for usage errors)
        except BrokenPipeError:  # the reader of our output went away: nothing to say
            _quiet_stdout()
            ctx.exit(1)
        except Exception as error:
            if debug:
                traceback.print_exc()
            command = " ".join(["rowcast", *_subcommands(ctx, given)])
            what = f"{type(error).__module__}.{type(error).__qualname__}"
            detail = " ".join(str(error).split())[:500] or "(no message)"
            print_error(
                f"{command} failed unexpectedly: {what}: {detail}. This is a bug in rowcast: "
                + (
                    "the traceback is above; please report it."
                    if debug
                    else "run the command again with ROWCAST_DEBUG=1 for the traceback, "
                    "and report it."
                )
            )
            ctx.exit(BUG)


def _subcommands(ctx: click.Context, args: list[str]) -> list[str]:
    """The sub-command names at the start of `args` (``events ls``)."""
    names: list[str] = []
    group: Any = ctx.command
    for arg in args:
        if not isinstance(group, click.Group) or arg.startswith("-"):
            break
        command = group.get_command(ctx, arg)
        if command is None:
            break
        names.append(arg)
        group = command
    return names


#: ``--version``: the version, then the paths this install runs on (`rowcast._speedups`)
_VERSION = "%(prog)s, version %(version)s\n" + (
    "speedups: none (ROWCAST_PURE is set: the plain paths)"
    if _speedups.PURE
    else "speedups: Python and C"
    if _speedups.compiled
    else "speedups: Python only (the C extension was not built: reinstall where a C "
    "compiler is for faster backfills and SQLite snapshots)"
)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush does not fail again."""
    with contextlib.suppress(OSError, ValueError):  # no real stdout (a test runner's)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rowcast", message=_VERSION)
def main() -> None:
    """rowcast: every committed row change of your database, as an event."""
