"""The Jinja filters of the console's templates: times, JSON, quoting, masking."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment

from .._url import masked
from .data import jsonable, pretty, shown_time
from .security import scrub

__all__ = ["install", "quoted_path"]


def quoted_path(value: str) -> str:
    """`value` fit for one path segment or query value (``/`` and ``@`` quoted too)."""
    return quote(value, safe="")


def _ago(epoch: float | None) -> str:
    if epoch is None:
        return ""
    seconds = max(0.0, time.time() - epoch)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def _cell(value: Any) -> str:
    """A value in a table cell: text as it is, the rest as JSON."""
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return value
    shown = jsonable(value)
    return shown if isinstance(shown, str) else pretty(shown).replace("\n", " ")


def _number(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:,.{digits}f}"
    return str(value)


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    return str(dt.timedelta(seconds=round(seconds)))


def install(env: Environment, secrets: list[str]) -> None:
    """Add the filters to `env`; `scrub` hides `secrets` in any text shown."""
    env.filters.update(
        q=quoted_path,
        time=shown_time,
        ago=_ago,
        pretty=pretty,
        cell=_cell,
        number=_number,
        duration=_duration,
        masked=masked,
        scrub=lambda text: scrub(str(text), secrets),
        query=lambda params: urlencode({k: v for k, v in params.items() if v not in (None, "")}),
    )
