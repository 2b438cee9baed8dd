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

import importlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

from ..change import Change
from ..errors import ConfigError
from ..hub import Hub

if TYPE_CHECKING:
    from ..checkpoint import Checkpoint

__all__ = ["Source", "open_source"]


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


# scheme -> "module:Class", imported only when a URL asks for it
_SOURCES = {
    "mysql": "rowcast.sources.mysql:BinlogSource",
    "mariadb": "rowcast.sources.mysql:BinlogSource",
}


def open_source(url: str, **options: Any) -> Source:
    """The source for `url` (``mysql://user:password@host:3306/db?server_id=...``)."""
    scheme = urlsplit(url).scheme.split("+", 1)[0].lower()
    target = _SOURCES.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in sorted(_SOURCES))
        raise ConfigError(f"no rowcast source for {url!r}: the URL must start with {known}")
    module_name, _, class_name = target.partition(":")
    module = importlib.import_module(module_name)
    source: Source = getattr(module, class_name)(url, **options)
    return source
