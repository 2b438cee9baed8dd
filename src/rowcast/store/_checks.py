"""The store's argument checks, shared by every store, sync or async: each refuses the
same input the same way (`rowcast.store.base` and `rowcast.store.aio` use them)."""

from __future__ import annotations

import math

from ..errors import ConfigError
from .types import ALL, ExpectedVersion, StreamState

__all__ = [
    "check_count",
    "check_expected",
    "check_name",
    "check_snapshot_name",
    "check_stream",
    "check_timeout",
    "kind",
]


def kind(value: object) -> str:
    """The name of `value`'s type, for error messages."""
    return type(value).__name__


def check_stream(stream: object, *, writing: bool = False, allow_all: bool = False) -> str:
    """`stream` if it is a valid name; ``"@all"`` only where `allow_all`."""
    if not isinstance(stream, str):
        raise TypeError(f"a stream name is a str, not {kind(stream)}")
    if not stream or "\x00" in stream:
        raise ConfigError(f"a stream name must be a non-empty string without NUL, not {stream!r}")
    if stream.startswith("@") and not (allow_all and stream == ALL):
        if writing:
            raise ConfigError(
                f"cannot write to stream {stream!r}: names starting with '@' are reserved "
                f"({ALL!r} is the global order)"
            )
        raise ConfigError(f"no stream {stream!r}: of the names starting with '@' only {ALL!r}")
    return stream


def check_count(value: object, what: str, *, allow_none: bool = False) -> int | None:
    """`value` if it is an int >= 0 (or None where allowed)."""
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} is an int{' or None' if allow_none else ''}, not {kind(value)}")
    if value < 0:
        raise ConfigError(f"{what} must be >= 0, not {value}")
    return value


def check_expected(expected: object) -> ExpectedVersion:
    """`expected` if it is a valid ``expected_version``."""
    if isinstance(expected, StreamState):
        return expected
    if not isinstance(expected, int) or isinstance(expected, bool):
        raise TypeError(
            f"expected_version is an int, ANY, NO_STREAM or STREAM_EXISTS, not {kind(expected)}"
        )
    if expected < 0:
        raise ConfigError(f"expected_version must be >= 0, not {expected}")
    return expected


def check_name(name: object, what: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{what} is a str, not {kind(name)}")
    if not name or "\x00" in name:
        raise ConfigError(f"{what} must be a non-empty string without NUL, not {name!r}")
    return name


def check_snapshot_name(name: object) -> str:
    return check_name(name, "a snapshot name")


def check_timeout(timeout: object) -> float | None:
    """`timeout` in seconds if it is None or a number >= 0 (infinity: None)."""
    if timeout is None:
        return None
    if not isinstance(timeout, int | float) or isinstance(timeout, bool):
        raise TypeError(f"a watch timeout is a number of seconds or None, not {kind(timeout)}")
    if not timeout >= 0:
        raise ConfigError(f"a watch timeout must be >= 0 seconds, not {timeout!r}")
    return None if math.isinf(timeout) else float(timeout)
