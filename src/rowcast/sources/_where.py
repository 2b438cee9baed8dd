"""A backfill's ``--where``: one SQL condition, checked to stay one.

Every source reads a chunk with ``... WHERE (<where>) AND (<key> > <last key>)``. A
condition whose parentheses do not balance, such as ``1=1) OR (1=1``, is still valid SQL
there, and it escapes its parentheses: ``(1=1) OR (1=1) AND (<key> > ...)`` matches
every row whatever the key, so every chunk starts again from the first row and the
backfill never ends, delivering the table again and again. A ``;`` or a comment could
end the statement or hide its key condition the same way. `check` refuses them, before
a request is recorded and again when a reader takes one up (a request row may have been
written by hand). String literals and quoted names may hold anything, in the standard
quotes (``'...'`` with ``''`` inside, ``"..."``, `````...`````). A dialect's own quoting
(MySQL's backslash escapes, PostgreSQL's ``E'...'`` and ``$$...$$``, SQLite's
``[...]``) is not understood: a condition that escapes through one reads no row past
the last key, which the reader sees (`escaped`) and gives the backfill up.
"""

from __future__ import annotations

from ..errors import ConfigError

__all__ = ["check", "escaped"]

_QUOTES = "'\"`"


def check(where: str) -> None:
    """A `ConfigError` (with the fix) unless `where` is one condition: its parentheses
    balance outside quotes, its quotes close, and it has no ``;`` and no comment."""
    problem = _problem(where)
    if problem is not None:
        raise ConfigError(
            f"--where {where!r} {problem}: it must be one SQL condition, such as "
            "\"status = 'open' AND (qty > 0 OR draft)\" (a quote inside a string is doubled: "
            "'O''Brien')"
        )


def escaped(table: str, after: object, where: str | None) -> str:
    """Why a backfill is given up whose chunk of `table` read no row past key `after`."""
    return (
        f"the chunk of {table} reads no row past key {after!r}, so the backfill would read "
        f"the same rows for ever: its --where {where!r} escapes its parentheses (through a "
        "dialect's own quoting: backslash escapes, $$ strings, [names]); ask again with "
        "plain '...' strings"
    )


def _problem(where: str) -> str | None:
    depth = 0
    quote: str | None = None
    i = 0
    while i < len(where):
        char = where[i]
        if quote is not None:
            if char == quote:
                if where[i + 1 : i + 2] == quote:  # doubled: the quote itself
                    i += 1
                else:
                    quote = None
        elif char in _QUOTES:
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                return "closes a parenthesis it did not open"
        elif char == ";":
            return "holds a ';'"
        elif where.startswith(("--", "/*"), i):  # (MySQL's # is PostgreSQL's #> too: the
            return "holds a comment"  # parentheses it would hide fail the server's check)
        i += 1
    if quote is not None:
        return f"leaves a {quote} open"
    if depth:
        return "leaves a parenthesis open"
    return None
