"""The contract every log source keeps, and `open_source` to pick one by URL.

A source reads a database's change log and yields *transactions*: non-empty
lists of `Change`, in commit order, each whole (never split, never merged).
Every change of a transaction carries the transaction's ``position``: where
reading can resume *after* it. So a consumer that saved the position of the
last transaction it handled restarts with no loss and no duplicate.

``start`` is ``"now"`` (the default: only what commits from now on),
``"start"`` (the oldest change the server still has) or a position string
from a Change or a checkpoint. A `Checkpoint` given as ``checkpoint=`` wins
over ``start`` when it holds a position, and `run` saves to it after the
hub's receivers returned from each transaction.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .. import backends
from .._url import masked
from ..change import Change
from ..errors import ConfigError
from ..hub import Hub

if TYPE_CHECKING:
    from ..checkpoint import Checkpoint

__all__ = ["Check", "Diagnosis", "Source", "diagnose", "open_source"]


@runtime_checkable
class Source(Protocol):
    """A stream of committed transactions from one database."""

    def __iter__(self) -> Iterator[list[Change]]:
        """Transactions in commit order; blocks for the next one."""
        ...

    def run(self, hub: Hub) -> None:
        """Publish every transaction on `hub` until `stop` is called."""
        ...

    def stop(self) -> None:
        """Stop reading; safe from another thread or a signal handler."""
        ...


def publish_all(source: Source, hub: Hub, checkpoint: Checkpoint | None) -> None:
    """What `Source.run` does: publish, then save the position, one transaction at a time."""
    for transaction in source:
        hub.publish(transaction)
        position = transaction[-1].position
        if checkpoint is not None and position is not None:
            checkpoint.save(position)


@dataclasses.dataclass(frozen=True)
class Check:
    """One line of ``rowcast doctor``: a setting, whether it is right, and the fix."""

    name: str
    ok: bool
    value: str
    fix: str = ""


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    """What ``rowcast doctor URL`` prints: the target, facts about it, and the checks."""

    target: str  #: the URL, password masked
    facts: list[tuple[str, str]]  #: ("server", "10.11.6-MariaDB"), ("binlog", "mysql-bin.000003:4")
    checks: list[Check]
    ready: str  #: said when every check passes, e.g. "rowcast can read this server's binlog."


def open_source(url: str, **options: Any) -> Source:
    """The source for `url` (``mysql://user:password@host:3306/db?server_id=...``)."""
    source: Source = backends.load("source", url)(url, **options)
    return source


def diagnose(url: str) -> Diagnosis:
    """Check that the server at `url` can be read as a change source (``rowcast doctor``).

    Raises `ConfigError` when the URL is not a source's or the server cannot be used at
    all (unreachable, wrong password); failed checks are in the result, not raised.
    A source's module offers it as a function ``diagnose(url) -> Diagnosis``.
    """
    module = sys.modules[backends.load("source", url).__module__]
    check = getattr(module, "diagnose", None)
    if check is None:
        raise ConfigError(f"{masked(url)!r}: {module.__name__} has no diagnose(url) to run")
    result: Diagnosis = check(url)
    return result
