"""``rowcast doctor``: can the server at a URL be read as a change source, and the fix if not."""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.text import Text

from ..sources.base import diagnose
from .common import TABLES
from .common import patterns as table_patterns
from .console import print_checks
from .urls import Url

__all__ = ["doctor"]


@click.command()
@click.argument("url", type=Url("source"))
@TABLES
def doctor(url: str, tables: tuple[str, ...]) -> None:
    """Check that the server at URL can be read as a change source; print the fix for each problem.

    URL is a source's: mysql://user:password@host:3306/db (or mariadb://),
    postgresql://user@host:5432/db?slot=rowcast&publication=rowcast, sqlite:///app.db. Exit
    status: 0 when every check passes, 1 when one fails, 2 when the server cannot
    be used at all (unreachable, wrong password, unsupported URL). With
    --tables, each pattern must match a table (as tail and relay check). Doctor only
    reads, in a read-only session: it creates no file, table, slot or publication.
    """
    patterns = table_patterns(tables)
    if patterns:  # as a source reads them: ?tables=
        if url.split(":", 1)[0].lower().startswith("outbox"):
            raise click.UsageError("--tables is for mysql://, postgresql:// and sqlite:// URLs")
        url += ("&" if "?" in url else "?") + "tables=" + ",".join(patterns)
    report = diagnose(url)
    console = Console(highlight=False)
    console.print(Text.assemble(("rowcast doctor ", "bold"), report.target), soft_wrap=True)
    width = max((len(name) for name, _ in report.facts), default=0)
    facts = "".join(f"  {name:<{width}}   {value}\n" for name, value in report.facts)
    console.print(Text(facts), soft_wrap=True)
    print_checks(console, report.checks)
    failed = sum(not c.ok for c in report.checks)
    if failed:
        console.print(
            f"\n{failed} of {len(report.checks)} checks failed: apply the fixes above and run "
            "rowcast doctor again."
        )
        sys.exit(1)
    console.print(f"\nAll {len(report.checks)} checks passed: {report.ready}")
