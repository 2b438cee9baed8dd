"""URL helpers shared by every backend family: masking a password, reading query options.

`query`, `number` and `boolean` read the options of a broker URL, for the sinks and
the consumers alike; `unknown_option` is the one error for an option nobody takes,
naming the option, its value and the closest known one. `check_query` gives it for a
database URL's option that neither rowcast nor the driver takes (pymysql and redis-py
raise a bare ``TypeError`` on connect, libpq says ``invalid connection option`` without
the value, SQLite ignores it); `driver_options` lists a driver's. `made_directory`
makes the directory of a file a URL names, or says why it cannot (the event store);
`existing_directory` requires it to exist (checkpoints: a missing one is a typo).
"""

from __future__ import annotations

import difflib
import inspect
import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from .errors import ConfigError

__all__ = [
    "boolean",
    "check_query",
    "driver_options",
    "existing_directory",
    "made_directory",
    "masked",
    "number",
    "pairs",
    "query",
    "unknown_option",
]


def masked(url: str) -> str:
    """`url` with its secrets replaced by ``***``: fit to print or log.

    The password in the user info, a ``password=`` query option (libpq takes one), and
    a NATS URL's token (``nats://TOKEN@host``). A URL too malformed to parse still has
    whatever sits between ``:`` and ``@`` after ``://`` masked.
    """
    try:
        parts = urlsplit(url)
        token = parts.scheme.lower() in _TOKEN_SCHEMES and parts.username is not None
        secret = parts.password is not None or token
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return _PASSWORD_TEXT.sub(r"\1***@", url)
    query = _PASSWORD_OPTION.sub(r"\1***", parts.query)
    if not secret and query == parts.query:
        return url
    netloc = parts.netloc
    if secret:
        userinfo, _, host = netloc.rpartition("@")
        user = "" if parts.password is None else f"{userinfo.partition(':')[0]}:"
        netloc = f"{user}***@{host}"
    return urlunsplit(parts._replace(netloc=netloc, query=query))


_TOKEN_SCHEMES = ("nats", "tls")  # a user without a password is a token there
_PASSWORD_OPTION = re.compile(r"((?:^|&)password=)[^&]*", re.IGNORECASE)
_PASSWORD_TEXT = re.compile(r"(://[^:/@]*:)[^@]*@")


def made_directory(what: str, directory: Path) -> None:
    """Create `directory` (and its parents) for `what`, or a `ConfigError` with the fix."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        blocking = next((p for p in (directory, *directory.parents) if p.exists()), directory)
        why = (
            f"{str(blocking)!r} is a file, not a directory"
            if blocking.exists() and not blocking.is_dir()
            else e.strerror or str(e)
        )
        raise ConfigError(
            f"{what}: cannot make the directory {str(directory)!r} ({why}); give a path in "
            "a directory this user can write"
        ) from e


def existing_directory(what: str, directory: Path) -> None:
    """A `ConfigError` with the fix unless `directory` exists (it is never made: a
    directory that is not there is more likely a typo than intent)."""
    try:
        _look_for(what, directory)
    except PermissionError as e:  # Path.is_dir raises it on a directory it cannot search
        raise ConfigError(
            f"{what}: cannot look into {e.filename or str(directory)!r} (permission denied); "
            "give a path in a directory this user can write, or grant it access"
        ) from e


def _look_for(what: str, directory: Path) -> None:
    if directory.is_dir():
        return
    blocking = next((p for p in directory.parents if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise ConfigError(
            f"{what}: {str(blocking)!r} is a file, not a directory; give a path in a "
            "directory this user can write"
        )
    if directory.exists():
        raise ConfigError(f"{what}: {str(directory)!r} is a file, not a directory")
    raise ConfigError(
        f"{what}: the directory {str(directory)!r} does not exist; create it (mkdir -p "
        f"{shlex.quote(str(directory))}) if that is where it goes, or fix the path"
    )


def unknown_option(
    url: str,
    name: str,
    value: str,
    what: str,
    known: Iterable[str],
    *,
    closest: Iterable[str] | None = None,
    others: str = "",
) -> ConfigError:
    """The error for option `name` (given as ``name=value``) that `what` does not take.

    It names the option and its value, the closest of the `known` options (or of
    `closest`, when given) when one is close (a typo), and all the `known` ones;
    `others` names the rest it takes (e.g. "libpq's connection options").
    """
    names = list(known)
    candidates = list(closest) if closest is not None else names
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    takes = ", ".join(names)
    if others:
        takes = f"{takes} and {others}" if takes else others
    return ConfigError(
        f"{masked(url)}: unknown option {name!r} (in {name}={value}); {hint}{what} takes "
        + (takes or "no option")
    )


_BOOLEANS = {
    **dict.fromkeys(("true", "1", "yes", "on"), True),
    **dict.fromkeys(("false", "0", "no", "off"), False),
}


def query(
    url: str,
    what: str,
    schemes: tuple[str, ...],
    known: tuple[str, ...],
    *,
    lists: tuple[str, ...] = (),
    others: bool = False,
) -> tuple[dict[str, str], dict[str, list[str]], list[tuple[str, str]]]:
    """The options of `url`: the `known` single ones, the repeatable ones (`lists`, also
    comma-separated), and the others in order (only if `others`).

    The scheme must be one of `schemes`. A known option given twice, or any other option
    when `others` is false, is a `ConfigError` naming what `what` (e.g. "the Redis sink")
    takes.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in schemes:
        raise ConfigError(
            f"{masked(url)}: {what} takes URLs starting with "
            + " or ".join(f"{s}://" for s in schemes)
        )
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as e:
        raise ConfigError(f"{masked(url)}: malformed query: {e}") from e
    options: dict[str, str] = {}
    many: dict[str, list[str]] = {}
    rest: list[tuple[str, str]] = []
    for name, value in pairs:
        if name in lists:
            many.setdefault(name, []).extend(v for v in value.split(",") if v)
        elif name not in known:
            if not others:
                raise unknown_option(url, name, value, what, (*known, *lists))
            rest.append((name, value))
        elif name in options:
            raise ConfigError(f"{masked(url)}: option {name!r} given twice")
        else:
            options[name] = value
    return options, many, rest


def number(
    url: str,
    name: str,
    given: Any,
    options: dict[str, str],
    default: Any,
    kind: Callable[[Any], float] = float,
) -> Any:
    """Option `name` as a positive finite `kind`: the keyword `given`, else the URL's, else
    `default`."""
    if given is None and name not in options:
        return default
    value: Any = given if given is not None else options[name]
    try:
        result = kind(value)
    except (TypeError, ValueError, OverflowError):
        result = float("nan")
    if isinstance(value, bool) or not 0 < result < float("inf"):
        raise ConfigError(f"{masked(url)}: {name} must be a positive number, not {value!r}")
    return result


def boolean(url: str, name: str, given: Any, options: dict[str, str], default: bool) -> bool:
    """Option `name` as true or false: the keyword `given`, else the URL's, else `default`.

    A bool is taken as is; text, in the URL or given as a keyword, is true/false, 1/0,
    yes/no or on/off in any case. Anything else is a `ConfigError` naming option and value.
    """
    value = given if given is not None else options.get(name)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    word = str(value).lower() if isinstance(value, str | int) else ""
    if word in _BOOLEANS:
        return _BOOLEANS[word]
    raise ConfigError(f"{masked(url)}: {name} is true or false, not {value!r}")


# the options SQLAlchemy's SQLite dialect and sqlite3's URI filenames read
_SQLITE = frozenset(
    {
        "timeout",
        "isolation_level",
        "detect_types",
        "check_same_thread",
        "cached_statements",
        "uri",
        "mode",
        "cache",
        "vfs",
        "immutable",
        "nolock",
        "psow",
        "modeof",
    }
)
# SQLAlchemy's MySQL dialects translate these before pymysql sees them
_MYSQL_SQLALCHEMY = frozenset({"ssl_capath", "ssl_cipher", "ssl_check_hostname"})
_DRIVER = {
    "postgresql": "libpq's",
    "mysql": "pymysql's",
    "sqlite": "SQLite's",
    "redis": "redis-py's",
    "rabbitmq": "pika's",
}


_KNOWN: dict[str, frozenset[str]] = {}  # driver_options found (a missing driver: asked again)


def driver_options(backend: str) -> frozenset[str] | None:
    """The query options `backend`'s driver takes ("postgresql", "mysql", "sqlite",
    "redis"), or None when it is not installed or unknown (not remembered: a driver that
    could not be imported once, installed or put back since, is asked again)."""
    found = _KNOWN.get(backend)
    if found is None:
        found = _driver_options(backend)
        if found is not None:
            _KNOWN[backend] = found
    return found


def _driver_options(backend: str) -> frozenset[str] | None:
    try:
        if backend == "sqlite":
            return _SQLITE
        if backend == "postgresql":
            import psycopg

            return frozenset(d.keyword.decode() for d in psycopg.pq.Conninfo.get_defaults())
        if backend == "mysql":
            import pymysql

            signature = inspect.signature(pymysql.connections.Connection.__init__)
            return frozenset(signature.parameters) - {"self"} | _MYSQL_SQLALCHEMY
        if backend == "rabbitmq":
            import pika

            prefix = "_set_url_"
            return frozenset(
                n[len(prefix) :] for n in dir(pika.URLParameters) if n.startswith(prefix)
            )
        if backend == "redis":
            import redis.connection

            names = set(redis.connection.URL_QUERY_ARGUMENT_PARSERS)
            for cls in (redis.connection.AbstractConnection, redis.connection.ConnectionPool):
                names |= set(inspect.signature(cls.__init__).parameters)
            return frozenset(names - {"self", "kwargs", "connection_kwargs"})
    except ImportError:
        return None
    return None


def check_query(
    url: str,
    pairs: Iterable[tuple[str, str]],
    backend: str,
    what: str,
    own: Iterable[str] = (),
) -> None:
    """A `ConfigError` for the first of `pairs` (name, value) that neither `what` (its
    options `own`) nor `backend`'s driver takes; nothing when the driver is unknown."""
    mine = list(own)
    known = driver_options(backend)
    if known is None:
        return
    for name, value in pairs:
        if name not in known and name not in mine:
            raise unknown_option(
                url,
                name,
                value,
                what,
                mine,
                closest=[*mine, *sorted(known)],
                others=f"{_DRIVER.get(backend, 'the driver')} connection options",
            )


def pairs(query: Mapping[str, str | tuple[str, ...]]) -> list[tuple[str, str]]:
    """A SQLAlchemy URL's query (a value, or a tuple of them) as (name, value) pairs."""
    return [(k, v) for k, vs in query.items() for v in ([vs] if isinstance(vs, str) else vs)]
