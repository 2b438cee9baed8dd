"""The SQLite event store's URL: ``sqlite:///path.db?timeout=30&synchronous=full``."""

from __future__ import annotations

from typing import Final
from urllib.parse import parse_qsl, unquote, urlsplit

from .._url import unknown_option
from ..errors import ConfigError

__all__ = ["parse_url"]

_OPTIONS: Final = ("synchronous", "timeout")
_SYNCHRONOUS: Final = ("full", "normal")


def parse_url(url: str, timeout: float | None, synchronous: str | None) -> tuple[str, float, str]:
    """(database path or ":memory:", timeout, synchronous) from `url` and the keywords."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite":
        raise ConfigError(f"{url!r} is not a sqlite:// URL")
    if parts.netloc:
        raise ConfigError(
            f"{url!r}: a SQLite URL has no host; write sqlite:///relative.db, "
            "sqlite:////abs/path.db or sqlite:// (memory)"
        )
    try:
        query = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True))
    except ValueError:
        raise ConfigError(f"{url!r}: malformed query {parts.query!r}; write ?timeout=30") from None
    for name, value in query.items():
        if name not in _OPTIONS:
            raise unknown_option(url, name, value, "a SQLite event store", _OPTIONS)
    raw_timeout: object = timeout if timeout is not None else query.get("timeout", 30.0)
    try:
        seconds = float(raw_timeout)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{url!r}: timeout must be a number of seconds") from None
    if not seconds >= 0:
        raise ConfigError(f"{url!r}: timeout must be >= 0 seconds, not {raw_timeout!r}")
    mode = str(synchronous if synchronous is not None else query.get("synchronous", "full"))
    if mode.lower() not in _SYNCHRONOUS:
        raise ConfigError(f"{url!r}: synchronous must be 'full' or 'normal', not {mode!r}")
    path = unquote(parts.path)
    database = path[1:] if path.startswith("/") else path
    if database in ("", ":memory:"):
        return ":memory:", seconds, mode.lower()
    return database, seconds, mode.lower()
