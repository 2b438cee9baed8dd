"""``rowcast config check FILE``: is a configuration file right, and what does it resolve to.

It reads the file as ``--config`` does (`rowcast.cli.config_file`), for every command
that takes one, and also checks that each command's table gives what the command
requires and that every URL names a backend rowcast has (with its driver installed).
Every mistake is reported at once, with its line, and the exit status is 2. A right
file is printed back resolved, as TOML: ``${NAME}`` expanded, password files read,
the defaults filled in (marked ``# default``), and every password masked.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

import click

from .. import backends
from .._url import masked
from ..errors import ConfigError
from .config_file import Setting, check, configurable, keys, mistakes, read
from .urls import Url

__all__ = ["config"]


@click.group()
def config() -> None:
    """Check configuration files (``--config FILE`` of relay and consume)."""


@config.command("check")
@click.argument("file")
def config_check(file: str) -> None:
    """Check the TOML configuration FILE and print it resolved, passwords masked.

    Unknown tables and keys, values a flag would refuse, missing required keys,
    unset ${VARIABLES}, unreadable or unprotected password files and URLs no
    backend serves are errors, each with its line; the exit status is then 2.
    """
    ctx = click.get_current_context()
    root = ctx.find_root().command
    commands = configurable(root) if isinstance(root, click.Group) else {}
    loaded = read(file)
    data, lines = loaded
    errors: list[str] = []
    for name in data:
        if name not in commands:
            errors.append(_unknown_table(file, lines.get((name,)), name, data[name], commands))
    resolved: dict[str, list[Setting]] = {}
    for name, command in commands.items():
        if name not in data:
            continue
        settings, wrong = check(file, command, click.Context(command), loaded)
        errors.extend(wrong)
        if isinstance(data[name], dict):  # else refused by `check` already
            errors.extend(_missing(file, lines.get((name,)), name, command, data[name]))
        errors.extend(_backends(file, name, settings))
        resolved[name] = settings
    if not data:
        errors.append(f"{file}: configures nothing: add a table for one of " + _tables(commands))
    if errors:
        errors.sort(key=lambda error: _line(file, error))
        raise ConfigError(errors[0] if len(errors) == 1 else mistakes(file, errors))
    click.echo(f"# {file}: valid; resolved, with passwords masked")
    for name, settings in resolved.items():
        click.echo(f"\n[{name}]")
        _print(commands[name], settings)


def _line(file: str, error: str) -> int:
    """The line a mistake is on (0: the whole file), to report them in order."""
    number = error.removeprefix(f"{file}:").partition(":")[0]
    return int(number) if number.isdigit() else 0


def _print(command: click.Command, settings: list[Setting]) -> None:
    """Every parameter `command` would run with, as TOML: the file's, then the defaults."""
    given = {s.param.name: s.value for s in settings}
    ctx = command.make_context(
        command.name, [], default_map=given, resilient_parsing=True, auto_envvar_prefix=None
    )
    for key, param in keys(command).items():
        value = ctx.params.get(param.name or "")
        if value is None or value == () or (value is False and param.name not in given):
            continue
        note = "" if param.name in given else "  # default"
        click.echo(f"{key} = {_toml(value, param)}{note}")


def _tables(commands: dict[str, click.Command]) -> str:
    return ", ".join(f"[{name}]" for name in commands) or "(no command takes a file)"


def _unknown_table(
    file: str, line: int | None, name: str, value: Any, commands: dict[str, click.Command]
) -> str:
    at = f"{file}:{line}" if line is not None else file
    if not isinstance(value, dict | list):
        return (
            f"{at}: {name}: a key outside any table; put it under the table of the command "
            f"it is for: {_tables(commands)}"
        )
    close = difflib.get_close_matches(name, list(commands), n=1, cutoff=0.6)
    hint = f"did you mean [{close[0]}]? " if close else ""
    return f"{at}: [{name}]: no such command takes a file; {hint}tables: {_tables(commands)}"


def _missing(
    file: str, line: int | None, name: str, command: click.Command, table: dict[str, Any]
) -> list[str]:
    """A mistake for each required parameter the table does not give."""
    given = {key.replace("_", "-") for key in table}
    at = f"{file}:{line}" if line is not None else file
    missing = []
    for key, param in keys(command).items():
        if param.required and key not in given:
            flag = param.get_error_hint(click.Context(command)).strip("'")
            missing.append(
                f"{at}: [{name}] {key}: missing; rowcast {name} requires it "
                f"({flag}): give it here (or on the command line, which the check cannot see)"
            )
    return missing


def _backends(file: str, name: str, settings: list[Setting]) -> list[str]:
    """A mistake for each URL that names no backend of its family (or lacks its driver)."""
    errors = []
    for setting in settings:
        family = setting.param.type.family if isinstance(setting.param.type, Url) else None
        if family is None:
            continue
        values = setting.value if isinstance(setting.value, list) else [setting.value]
        for url in values:
            scheme = None
            if url == "-":
                scheme = "-"
            elif "://" not in url and family == "checkpoint":
                scheme = "file"
            try:
                backends.load(family, url, scheme)
            except ConfigError as e:
                at = f"{file}:{setting.line}" if setting.line is not None else file
                errors.append(f"{at}: [{name}] {setting.key}: {e}")
    return errors


def _toml(value: Any, param: click.Parameter) -> str:
    """`value` written as TOML, URLs masked."""
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(item, param) for item in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    if isinstance(param.type, Url) or "://" in text:
        text = masked(text)
    return json.dumps(text, ensure_ascii=False)
