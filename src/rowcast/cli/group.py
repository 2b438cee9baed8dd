"""The ``rowcast`` group: the commands of `rowcast.cli` join it, and its errors end them.

A `RowcastError` raised by any command ends it with ``error: <message>`` on
stderr and exit status 2.
"""

from __future__ import annotations

from typing import Any

import click

from .. import __version__
from ..errors import RowcastError
from .console import print_error

__all__ = ["main"]


class _Group(click.Group):
    """Turns a `RowcastError` into ``error: <message>`` on stderr and exit status 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RowcastError as error:
            print_error(error)
            ctx.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rowcast")
def main() -> None:
    """rowcast: every committed row change of your database, as an event."""
