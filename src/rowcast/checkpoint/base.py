"""Where a consumer keeps the position of the last transaction it fully handled.

A relay (or ``rowcast tail``) saves a source position after each transaction it
has delivered; on restart it loads it and resumes there, losing and repeating
nothing. Positions are opaque non-empty strings (a binlog file:offset, a GTID
set, an LSN). `open_checkpoint(url, name)` picks the backend by URL (family
``checkpoint`` of `rowcast.backends`, where outside code can add its own):

* a path (``./pos.json``, ``~/pos``) or ``file:///abs/path``: `FileCheckpoint`
  (`rowcast.checkpoint.file`), one JSON file per name (``<path>`` for
  ``"default"``, ``<path>.<name>`` otherwise);
* ``sqlite:///x.db``, ``postgresql://``, ``mysql://``, ``mariadb://`` (or with an
  explicit ``+driver``): `SQLCheckpoint` (`rowcast.checkpoint.sql`), a row of
  table ``rowcast_checkpoint``;
* ``redis://host:port/db``, ``rediss://``: `RedisCheckpoint`
  (`rowcast.checkpoint.redis`), a hash ``rowcast:checkpoint:<name>``.

A backend is built as ``cls(url, name=name)``; `BaseCheckpoint` gives it the
checks and errors below, so it only implements ``_load``, ``_save`` and ``_close``,
and for reports ``_save_report(text)`` and a classmethod ``read_reports(url, name)``
(`rowcast.checkpoint.report`; a Kafka checkpoint adds them the same way).

The contract, on every backend:

* ``load()`` is the last saved position, or None when nothing was saved under
  the name; data it cannot read (a corrupt file, a key of another type) is a
  `StoreError`, never None.
* ``save(position)`` is durable when it returns, and the last save wins. A
  Redis checkpoint is only as durable as the server's own persistence (RDB,
  AOF): a Redis without persistence forgets it on restart.
* A name is 1-200 characters of ``A-Z a-z 0-9 _ . -`` starting with a letter or
  digit: a file suffix, a key and a row alike. A URL may carry it as
  ``?name=...`` (a plain path never does); the URL's name is used when the
  argument is left at ``"default"``, and two different names are a `ConfigError`.
* `open_checkpoint` connects (and creates the table or the directory), so a
  server that is down or a wrong password fails at once with a `StoreError`,
  before the consumer reads anything. A malformed URL, an unknown scheme or a
  missing driver is a `ConfigError`.
* Driver errors become `StoreError` (``from`` the driver error), whose message
  names the operation and the URL with its password masked as ``***``.
* ``close()`` is idempotent; a closed checkpoint raises `StoreError`.
* ``save_report(report)`` keeps what the reader says about itself beside its
  position (`rowcast.checkpoint.report`: the format, where each backend keeps it,
  and `read_reports`, which ``rowcast status`` uses).
"""

from __future__ import annotations

import json
import re
from typing import Any, NoReturn, Protocol, Self, runtime_checkable
from urllib.parse import parse_qsl, urlsplit

from .. import backends
from .._url import masked
from ..errors import ConfigError, StoreError

__all__ = ["BaseCheckpoint", "Checkpoint", "open_checkpoint", "parse_report", "reason"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")
_SCHEMES = "a file path, file:///abs/path, sqlite:///x.db, postgresql://, mysql://, redis://"


@runtime_checkable
class Checkpoint(Protocol):
    """The saved position of one named consumer (see the module docstring for the contract)."""

    url: str  #: the URL it was opened with, password masked

    def load(self) -> str | None:
        """The last saved position, or None when nothing was saved yet."""

    def save(self, position: str) -> None:
        """Keep `position`; it is durable when this returns."""

    def close(self) -> None:
        """Release connections; idempotent."""

    def __enter__(self) -> Self:
        """The checkpoint itself; `close` on leaving the block."""

    def __exit__(self, *exc: object) -> None:
        """Close the checkpoint."""


class BaseCheckpoint:
    """Validation, the closed flag and error translation, shared by every backend.

    A backend implements ``_load`` and ``_save`` (and ``_close`` when it holds
    connections), and raises its driver's errors through ``_fail``.
    """

    def __init__(self, url: str, name: str) -> None:
        self.url = masked(url)
        self.name = name
        self._closed = False
        self._opened = url  # with its password: for `reports`

    def load(self) -> str | None:
        self._check_open("load")
        return self._load()

    def save(self, position: str) -> None:
        if not isinstance(position, str):
            raise TypeError(f"a checkpoint position is a str, not {type(position).__name__}")
        if not position or "\x00" in position:
            raise ConfigError(
                f"a checkpoint position must be a non-empty string without NUL, not {position!r}"
            )
        self._check_open("save")
        self._save(position)

    def save_report(self, report: dict[str, Any]) -> None:
        """Replace this name's report (`rowcast.checkpoint.report`) with `report`."""
        self._check_open("save a report of")
        text = json.dumps({**report, "name": self.name}, ensure_ascii=False, default=str)
        self._save_report(text)

    def reports(self) -> list[dict[str, Any]]:
        """This name's report as the backend's ``read_reports`` reads it ([] when the
        backend keeps none, or none was saved)."""
        reader = getattr(type(self), "read_reports", None)
        return [] if reader is None else list(reader(self._opened, self.name))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self, operation: str) -> None:
        if self._closed:
            raise StoreError(f"cannot {operation} checkpoint {self.name!r} at {self.url}: closed")

    def _fail(self, operation: str, error: BaseException) -> NoReturn:
        raise StoreError(
            f"checkpoint {self.name!r} at {self.url}: {operation} failed: {reason(error)}"
        ) from error

    def _load(self) -> str | None:
        raise NotImplementedError

    def _save(self, position: str) -> None:
        raise NotImplementedError

    def _save_report(self, text: str) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        pass


def reason(error: BaseException) -> str:
    """A driver error in one line: the DB-API error under SQLAlchemy's wrapper (without its
    background link), or the error itself."""
    inner = getattr(error, "orig", None) or error
    lines = [line.strip() for line in str(inner).splitlines() if line.strip()]
    return " ".join(lines) or type(inner).__name__


def parse_report(text: str | bytes, where: str) -> dict[str, Any]:
    """A report read back: the JSON object `text`, else a `StoreError` naming `where`."""
    try:
        report = json.loads(text)
    except ValueError:
        report = None
    if not isinstance(report, dict):
        raise StoreError(f"the report at {where} is not a JSON object: {text[:80]!r}")
    return report


def _check_name(name: object) -> str:
    """`name` if it is a valid checkpoint name, else the `ConfigError` saying what is."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f"a checkpoint name is 1-200 characters of A-Z a-z 0-9 _ . - starting with a "
            f"letter or digit, not {name!r}"
        )
    return name


def open_checkpoint(url: str, name: str = "default") -> Checkpoint:
    """Open the checkpoint `name` at `url` (see the module docstring for URLs and errors)."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"a checkpoint URL is a non-empty string ({_SCHEMES}), not {url!r}")
    _check_name(name)
    if "://" not in url:
        checkpoint: Checkpoint = backends.load("checkpoint", url, "file")(url, name=name)
        return checkpoint
    parts = urlsplit(url)
    names = [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if k == "name"]
    if names:
        if len(names) > 1 or (name != "default" and names[0] != name):
            raise ConfigError(
                f"checkpoint {masked(url)} names {names!r} in its URL but "
                f"{name!r} was asked for; give the name once"
            )
        name = _check_name(names[0])
    checkpoint = backends.load("checkpoint", url)(url, name=name)
    return checkpoint
