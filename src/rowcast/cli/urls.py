"""The URLs the commands take, their secrets kept off the command line (`Url`).

`expand` replaces each ``${NAME}`` in a text with the environment variable's value
(``$${`` is a literal ``${``); an unset variable is a `ConfigError` naming it.
`password_file` reads a password from a file that only its owner may read (as
``~/.pgpass`` and ssh keys must be), once per process. `resolve_url` applies both to
a URL: ``mysql://app@db/shop?password_file=/etc/rowcast/db.password`` becomes the URL
with that password (percent-encoded) in its user info, the ``password_file`` option
gone, so no driver ever sees it.

Every URL parameter of the commands is a `Url`, which resolves it this way, from
flags and from ``--config`` files alike; the result holds the password, so it is only
ever printed through `rowcast._url.masked`. A malformed URL is a `ConfigError` too.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, quote, unquote, urlsplit, urlunsplit

import click

from .._url import masked
from ..backends import Family
from ..errors import ConfigError

__all__ = ["Resolved", "Url", "expand", "password_file", "resolve_url", "with_password"]

# $${ (a literal "${"), or ${...} up to the next "}", or a "${" that is never closed
_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_READ: dict[Path, str] = {}  # password files read so far: each is read once


def expand(text: str, where: str = "", *, encode: bool = False) -> str:
    """`text` with each ``${NAME}`` replaced by the environment variable NAME.

    ``$${`` stands for a literal ``${``; a ``$`` not followed by ``{`` is kept as it
    is. With `encode`, each value is percent-encoded (for a URL's user info or query).
    A variable that is not set, a malformed name or a ``${`` never closed is a
    `ConfigError` starting with `where` (e.g. ``"relay.toml:3: to"``).
    """
    if "${" not in text:
        return text
    prefix = f"{where}: " if where else ""

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "$${":
            return "${"
        name = match.group(1)
        if name is None:
            raise ConfigError(
                f"{prefix}'${{' is never closed by '}}'; write $${{ for a literal ${{"
            )
        if not _NAME.fullmatch(name):
            raise ConfigError(
                f"{prefix}${{{name}}} is not an environment variable name (letters, digits "
                "and _, not starting with a digit); write $${ for a literal ${"
            )
        value = os.environ.get(name)
        if value is None:
            raise ConfigError(
                f"{prefix}environment variable {name} is not set: set it (export {name}=..., "
                "or in the service's EnvironmentFile), or write $${ for a literal ${"
            )
        return quote(value, safe="") if encode else value

    return _REFERENCE.sub(replace, text)


def _expand_url(url: str, where: str) -> str:
    """`url` with its variables expanded: percent-encoded in the user info and in query
    values (where a password goes: ``mysql://app:${DB_PASSWORD}@db/shop``), as they are
    elsewhere (a host, a path, or the whole URL: ``${DATABASE_URL}``)."""
    if "${" not in url:
        return url
    parts = _split(url, where)
    if "://" not in url or not parts.netloc:
        return expand(url, where)
    userinfo, at, host = parts.netloc.rpartition("@")
    pairs = []
    for pair in parts.query.split("&") if parts.query else []:
        name, equals, value = pair.partition("=")
        pairs.append(expand(name, where) + equals + expand(value, where, encode=True))
    return urlunsplit(
        (
            expand(parts.scheme, where),
            expand(userinfo, where, encode=True) + at + expand(host, where),
            expand(parts.path, where),
            "&".join(pairs),
            expand(parts.fragment, where),
        )
    )


def password_file(path: str, where: str = "") -> str:
    """The password in the file at `path`: its text without the trailing newline.

    The file must be a regular file that neither its group nor others may read:
    otherwise a `ConfigError` names the ``chmod 600`` to run. Each file is read once
    per process. Errors start with `where`.
    """
    prefix = f"{where}: " if where else ""
    file = Path(path).expanduser()
    if file in _READ:
        return _READ[file]
    try:
        info = file.stat()
    except OSError as e:
        raise ConfigError(f"{prefix}password file {str(file)!r}: {e.strerror}") from e
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{prefix}password file {str(file)!r} is not a regular file")
    if info.st_mode & 0o077:
        raise ConfigError(
            f"{prefix}password file {str(file)!r} may be read by others "
            f"(mode {stat.filemode(info.st_mode)}): run chmod 600 {file} (and make it owned "
            "by the user rowcast runs as)"
        )
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{prefix}password file {str(file)!r} cannot be read: {e}") from e
    password = text[:-1] if text.endswith("\n") else text
    password = password[:-1] if password.endswith("\r") else password
    if not password or "\n" in password:
        raise ConfigError(
            f"{prefix}password file {str(file)!r} must hold the password on one line "
            "(it is empty or has several lines)"
        )
    _READ[file] = password
    return password


def _split(url: str, where: str) -> SplitResult:
    """`urlsplit(url)`, or the `ConfigError` for a URL it cannot split (an unclosed "[")."""
    try:
        return urlsplit(url)
    except ValueError as e:
        prefix = f"{where}: " if where else ""
        raise ConfigError(f"{prefix}malformed URL {masked(url)!r}: {e}") from None


def with_password(url: str, password: str, where: str = "") -> str:
    """`url` with `password` (percent-encoded) in its user info.

    A URL that has a password already is a `ConfigError`: say it once.
    """
    parts = _split(url, where)
    prefix = f"{where}: " if where else ""
    if "://" not in url or not parts.hostname:
        raise ConfigError(f"{prefix}a password needs a URL with a host, not {masked(url)!r}")
    if parts.password is not None:
        raise ConfigError(
            f"{prefix}{masked(url)} has a password already: give it once (in the URL, "
            "or as password_file)"
        )
    userinfo, _, host = parts.netloc.rpartition("@")
    netloc = f"{userinfo}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def resolve_url(url: str, where: str = "") -> str:
    """`url` with its ``${NAME}`` expanded and its ``password_file=PATH`` option read.

    A variable in the user info or a query value is percent-encoded (the environment
    holds the password as it is); elsewhere it is put in as it is. The password file's
    password goes in the URL's user info and the option is removed from the query (so
    no driver sees it); the other options keep their order and spelling. A URL without
    either comes back unchanged. Errors, all `ConfigError`, start with `where`, and
    never show a password.
    """
    url = _expand_url(url, where)
    parts = _split(url, where)
    if "password_file=" not in url:
        return url
    kept, files = [], []
    for pair in parts.query.split("&") if parts.query else []:
        name, _, value = pair.partition("=")
        if name == "password_file":
            files.append(value)
        else:
            kept.append(pair)
    if not files:
        return url
    prefix = f"{where}: " if where else ""
    if len(files) > 1:
        raise ConfigError(f"{prefix}{masked(url)}: password_file is given twice")
    path = unquote(files[0])
    if not path:
        raise ConfigError(f"{prefix}{masked(url)}: password_file= names no file")
    stripped = urlunsplit(parts._replace(query="&".join(kept)))
    return with_password(stripped, password_file(path, where), where)


class Resolved(str):
    """A URL already resolved (from a ``--config`` file): `Url` takes it as it is."""

    __slots__ = ()


class Url(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.4 on
    """A URL given on the command line, with its secrets resolved (`resolve_url`).

    ``${NAME}`` is replaced by the environment variable (``$${`` is a literal ``${``),
    and ``password_file=PATH`` by the password in that file, so a password need never
    be in the command line. `family` is the kind of backend the URL names (None: any),
    for ``rowcast config check``. An error is a `ConfigError` naming the parameter.
    """

    name = "url"

    def __init__(self, family: Family | None = None) -> None:
        self.family = family

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, Resolved):
            return str(value)
        if not isinstance(value, str):
            return value
        where = param.get_error_hint(ctx) if param is not None and ctx is not None else ""
        return resolve_url(value, where.replace("'", ""))
