"""Reading a consumer URL's query options: shared by the broker modules."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .._url import masked
from ..errors import ConfigError

__all__ = ["number", "query"]

_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def query(
    url: str, schemes: tuple[str, ...], known: tuple[str, ...], *, lists: tuple[str, ...] = ()
) -> tuple[dict[str, str], dict[str, list[str]], list[tuple[str, str]]]:
    """The options of `url`: single ones, repeatable ones (`lists`), and the unknown ones.

    The scheme must be one of `schemes`; an option of `known` given twice is a `ConfigError`.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in schemes:
        raise ConfigError(
            f"{masked(url)}: this consumer takes URLs starting with "
            + " or ".join(f"{s}://" for s in schemes)
        )
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as e:
        raise ConfigError(f"{masked(url)}: malformed query: {e}") from e
    single: dict[str, str] = {}
    many: dict[str, list[str]] = {}
    rest: list[tuple[str, str]] = []
    for name, value in pairs:
        if name in lists:
            many.setdefault(name, []).extend(v for v in value.split(",") if v)
        elif name not in known:
            rest.append((name, value))
        elif name in single:
            raise ConfigError(f"{masked(url)}: option {name!r} given twice")
        else:
            single[name] = value
    return single, many, rest


def number(url: str, name: str, given: Any, options: dict[str, str], default: float) -> float:
    """Option `name` as a positive number: the keyword `given`, else the URL's, else `default`."""
    if given is None and name not in options:
        return default
    value: Any = given if given is not None else options[name]
    try:
        result = float(value)
    except (TypeError, ValueError):
        result = float("nan")
    if isinstance(value, bool) or not 0 < result < float("inf"):
        raise ConfigError(f"{masked(url)}: {name} must be a positive number, not {value!r}")
    return result


def boolean(url: str, name: str, given: Any, options: dict[str, str], default: bool) -> bool:
    """Option `name` as true/false."""
    if given is not None:
        return bool(given)
    text = options.get(name)
    if text is None:
        return default
    if text.lower() not in _BOOLEANS:
        raise ConfigError(f"{masked(url)}: {name} is true or false, not {text!r}")
    return _BOOLEANS[text.lower()]
