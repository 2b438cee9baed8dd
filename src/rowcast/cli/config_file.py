"""``--config FILE``: a command's options read from a TOML file; flags on the command line win.

A file has one table per command, named after it; its keys are the command's own
options and arguments, with the same names and meanings::

    [relay]
    source = "mysql://rowcast@db:3306/shop?password_file=/etc/rowcast/mysql.password"
    to = ["postgresql://rowcast@replica/shop?mode=replicate", "redis://cache:6379/0"]
    checkpoint = { url = "postgresql://rowcast@replica/shop", password = "${PG_PASSWORD}" }
    tables = ["shop.*"]
    batch-size = 1000

Nothing here names an option: everything comes from the click command. A key is an
option's long name without ``--`` (``to``, ``batch-size``, ``on-error``; ``_`` may be
written for ``-``), or an argument's name without ``_url`` (``source`` for SOURCE_URL,
``url`` for URL). A value has the TOML type the option takes (a string, an integer,
``true`` for a flag), is checked as the flag is, and may be a list for an option that
can be repeated. Every string has its ``${NAME}`` expanded (`rowcast.cli.urls`); a URL
may also be a table ``{ url = ..., password = ... }`` or ``{ url = ..., password_file =
... }``, and a ``password_file=`` option in a URL is read: the password never needs to
be on a command line nor in the file.

A command takes a file with `config_option`; its table's values become the defaults of
its parameters (click's ``default_map``), so a flag given on the command line replaces
the file's value (a repeated flag, all of the file's values). Errors, all in one
`ConfigError` (exit status 2), give the file, the line, the key, what is wrong and the
closest known key. Several tables for one command (``[[relay]]``, ``[relay.orders]``)
are refused: run one process per relay, each with its own file.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from ..errors import ConfigError
from .urls import Resolved, Url, expand, password_file, resolve_url, with_password

__all__ = [
    "Setting",
    "check",
    "config_option",
    "configurable",
    "key_of",
    "keys",
    "mistakes",
    "read",
    "section",
]

_F = TypeVar("_F", bound=Callable[..., Any])
_URL_KEYS = ("url", "password", "password_file")
_ONE_PER_FILE = (
    "several {what} in one file: rowcast runs one per process, each with its own file "
    "(one exit status, one status line and one metrics port each; a failing one does "
    "not stop the others): write one file per {name} and run each as its own process, "
    "e.g. a systemd template unit rowcast-{name}@.service running "
    "`rowcast {name} --config /etc/rowcast/%i.toml`"
)


@dataclasses.dataclass(frozen=True)
class Setting:
    """One key of a command's table: its parameter, its checked value, where it is."""

    key: str
    param: click.Parameter
    value: Any  #: as the parameter takes it; URLs resolved (secrets in, as `Resolved`)
    line: int | None


def key_of(param: click.Parameter) -> str | None:
    """The key that sets `param` in a file; None for a parameter a file cannot set."""
    if param.name is None or not param.expose_value or param.name == "config":
        return None
    if isinstance(param, click.Option):
        longs = [opt for opt in param.opts if opt.startswith("--")]
        return longs[0][2:] if longs else None
    name = param.name.removesuffix("_url") or param.name
    return name.replace("_", "-")


def keys(command: click.Command) -> dict[str, click.Parameter]:
    """Every key of `command`'s table, in the order of its parameters."""
    found = {}
    for param in command.params:
        key = key_of(param)
        if key is not None:
            found[key] = param
    return found


def configurable(group: click.Group) -> dict[str, click.Command]:
    """The commands of `group` that take ``--config``, by name (their tables' names)."""
    return {
        name: command
        for name, command in sorted(group.commands.items())
        if any(param.name == "config" for param in command.params)
    }


def read(path: str) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    """The TOML file at `path` and the line of each table and key (by their path)."""
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError(f"config file {path!r} cannot be read: {why}") from e
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from e
    return data, _lines(text)


_BARE = r"[A-Za-z0-9_-]+|\"(?:[^\"\\]|\\.)*\"|'[^']*'"
_DOTTED = rf"(?:{_BARE})(?:\s*\.\s*(?:{_BARE}))*"
_TABLE = re.compile(rf"\s*\[\[?\s*({_DOTTED})\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(rf"\s*({_DOTTED})\s*=")


def _parts(dotted: str) -> tuple[str, ...]:
    return tuple(
        part[1:-1] if part[:1] in "\"'" else part
        for part in re.findall(_BARE, dotted)  # quoted keys keep their dots
    )


def _lines(text: str) -> dict[tuple[str, ...], int]:
    """The first line of each table header and of each key (as full paths): good enough
    to point at a mistake, not a TOML parser (tomllib has no positions)."""
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), 1):
        if match := _TABLE.match(line):
            table = _parts(match.group(1))
            lines.setdefault(table, number)
        elif match := _KEY.match(line):
            lines.setdefault(table + _parts(match.group(1)), number)
    return lines


def section(
    path: str,
    command: click.Command,
    ctx: click.Context | None = None,
    loaded: tuple[dict[str, Any], dict[tuple[str, ...], int]] | None = None,
) -> list[Setting]:
    """The checked settings of `command`'s table (named after it) in the file at `path`;
    none when the file has no such table. Every mistake is in one `ConfigError`."""
    settings, errors = check(path, command, ctx, loaded)
    if len(errors) == 1:
        raise ConfigError(errors[0])
    if errors:
        raise ConfigError(mistakes(path, errors))
    return settings


def check(
    path: str,
    command: click.Command,
    ctx: click.Context | None = None,
    loaded: tuple[dict[str, Any], dict[tuple[str, ...], int]] | None = None,
) -> tuple[list[Setting], list[str]]:
    """`section`'s settings, and its mistakes (one message each) instead of an error."""
    data, lines = loaded if loaded is not None else read(path)
    errors: list[str] = []
    settings = list(_settings(path, data, lines, command, command.name or "", ctx, errors))
    return settings, errors


def mistakes(path: str, errors: list[str]) -> str:
    """One message for several mistakes in the file at `path`."""
    return f"{path} has {len(errors)} mistakes:\n" + "\n".join(f"  {e}" for e in errors)


def _settings(
    path: str,
    data: dict[str, Any],
    lines: dict[tuple[str, ...], int],
    command: click.Command,
    name: str,
    ctx: click.Context | None,
    errors: list[str],
) -> Iterator[Setting]:
    table = data.get(name)
    if table is None:
        return
    at = lines.get((name,))
    if isinstance(table, list):
        errors.append(_where(path, at, f"[[{name}]]") + _ONE_PER_FILE.format(
            what=f"[[{name}]] tables", name=name
        ))  # fmt: skip
        return
    if not isinstance(table, dict):
        errors.append(_where(path, at, name) + f"is a value, not a table: write [{name}] "
                      "on a line of its own, then its keys")  # fmt: skip
        return
    known = keys(command)
    given: dict[str, str] = {}
    for raw_key, raw in table.items():
        line = lines.get((name, raw_key))
        where = _where(path, line, f"[{name}] {raw_key}")
        key = raw_key if raw_key in known else raw_key.replace("_", "-")
        param = known.get(key)
        if param is None:
            errors.append(where + _unknown(name, raw_key, raw, known))
            continue
        if key in given:
            errors.append(where + f"{key} is already given (as {given[key]})")
            continue
        given[key] = raw_key
        try:
            value = _value(param, raw, where, ctx)
        except _Mistakes as e:  # a list's items: each of its mistakes
            errors.extend(e.errors)
            continue
        except ConfigError as e:
            errors.append(str(e))
            continue
        yield Setting(key, param, value, line)


def _where(path: str, line: int | None, what: str) -> str:
    return f"{path}:{line}: {what}: " if line is not None else f"{path}: {what}: "


def _unknown(name: str, key: str, value: Any, known: dict[str, click.Parameter]) -> str:
    if isinstance(value, dict):  # [relay.orders]: a second relay, not an option
        return _ONE_PER_FILE.format(what=f"[{name}] tables ([{name}.{key}])", name=name)
    if key == "config":
        return "a config file cannot name another one"
    close = difflib.get_close_matches(key.replace("_", "-"), list(known), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key; {hint}[{name}] takes {', '.join(known)}"


class _Mistakes(ConfigError):
    """The mistakes of a list's items, each its own."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


def _value(param: click.Parameter, raw: Any, where: str, ctx: click.Context | None) -> Any:
    """`raw` (from TOML) checked and converted as `param` takes it from the command line."""
    if param.multiple or param.nargs == -1:
        items, values, wrong = raw if isinstance(raw, list) else [raw], [], []
        for item in items:
            try:
                values.append(_one(param, item, where, ctx))
            except ConfigError as e:  # on to the next item: every mistake at once
                wrong.append(str(e))
        if wrong:
            raise _Mistakes(wrong)
        return values
    if isinstance(raw, list):
        raise ConfigError(f"{where}takes one value, not a list")
    return _one(param, raw, where, ctx)


_PYTHON = {
    click.types.IntParamType: (int,),
    click.types.FloatParamType: (int, float),
    click.types.BoolParamType: (bool,),
    click.types.StringParamType: (str,),
    click.types.Choice: (str,),
    click.types.Path: (str,),
}
_TOML = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _one(param: click.Parameter, raw: Any, where: str, ctx: click.Context | None = None) -> Any:
    kind = param.type
    if isinstance(kind, Url):
        return Resolved(_url(raw, where))
    if isinstance(raw, dict | list):
        raise ConfigError(f"{where}takes a single value, not a {type(raw).__name__}")
    wanted = next((types for t, types in _PYTHON.items() if isinstance(kind, t)), None)
    if isinstance(param, click.Option) and param.is_bool_flag:
        wanted = (bool,)
    if wanted is not None and (
        not isinstance(raw, wanted) or (isinstance(raw, bool) and bool not in wanted)
    ):
        expected = " or ".join(dict.fromkeys(_TOML[t] for t in wanted))
        raise ConfigError(f"{where}is {expected}, not {_show(raw)}")
    if isinstance(raw, str):
        raw = expand(raw, where.rstrip(": "))
    try:
        return kind.convert(raw, param, ctx)
    except click.BadParameter as e:
        raise ConfigError(f"{where}{e.message}") from e


def _url(raw: Any, where: str) -> str:
    """A URL key's value: a string, or a table ``{url, password | password_file}``."""
    at = where.rstrip(": ")
    if isinstance(raw, str):
        return resolve_url(raw, at)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}is a URL (a string, or a table with url =), not {_show(raw)}")
    for key, value in raw.items():
        if key not in _URL_KEYS:
            close = difflib.get_close_matches(key, _URL_KEYS, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"{at}.{key}: unknown key; {hint}a URL table takes {', '.join(_URL_KEYS)}"
            )
        if not isinstance(value, str):
            raise ConfigError(f"{at}.{key}: is a string, not {_show(value)}")
    if "url" not in raw:
        raise ConfigError(f'{where}a URL table needs url = "..."')
    if "password" in raw and "password_file" in raw:
        raise ConfigError(f"{where}give password or password_file, not both")
    url = resolve_url(raw["url"], f"{at}.url")
    if "password" in raw:
        return with_password(url, expand(raw["password"], f"{at}.password"), at)
    if "password_file" in raw:
        secret = password_file(expand(raw["password_file"], f"{at}.password_file"), at)
        return with_password(url, secret, at)
    return url


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _load(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    loaded = read(value)
    name = ctx.command.name or ""
    if name not in loaded[0]:
        tables = ", ".join(f"[{t}]" for t in loaded[0]) or "none"
        raise ConfigError(
            f"{value}: no [{name}] table for rowcast {name} (its tables: {tables}); add one"
        )
    settings = section(value, ctx.command, ctx, loaded)
    ctx.default_map = {**(ctx.default_map or {}), **{s.param.name: s.value for s in settings}}
    return value


def config_option(f: _F) -> _F:
    """``--config FILE``: the command's defaults from its table in a TOML file."""
    return click.option(
        "--config",
        type=str,
        metavar="FILE",
        is_eager=True,
        expose_value=False,
        callback=_load,
        help="Read the options from this TOML file's table named after the command (see "
        "`rowcast config check`); options given here replace the file's.",
    )(f)
