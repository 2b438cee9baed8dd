"""Dead letters: transactions a sink refused for good, kept aside with the error.

``rowcast relay ... --on-error dead-letter --dead-letter sqlite:///dead.db``: when a
sink refuses a transaction with a `rowcast.errors.PermanentSinkError`, the relay
puts that transaction here and goes on past it (`rowcast.relay`). A dead-letter
destination keeps every change of the transaction *with* the error, so it is one of
the sinks that can (`DeadLetterSink`):

* an event store (``sqlite:///dead.db``, ``postgresql://...``): each change is the
  event the store sink makes of it (stream ``<schema>.<table>-<pk>``, its change id,
  ``Change(**event.data)`` rebuilds it) with the metadata ``{"dead_letter": reason}``;
  read them with ``rowcast events read``;
* ``-``: standard output, one JSON line per change with ``"dead_letter": reason``
  after its id.

`reason` (`reason`) names the sink that refused the transaction, the error, its fix
and its cause, and when. Putting a dead letter is idempotent (the same change ids),
so a relay that dies before its checkpoint moves past it puts it again harmlessly.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from .._url import masked
from ..errors import ConfigError, PermanentSinkError
from .base import Batch, Sink, open_sink

__all__ = ["DeadLetterSink", "open_dead_letter", "reason"]


@runtime_checkable
class DeadLetterSink(Sink, Protocol):
    """A sink that can also keep refused changes with the reason they were refused."""

    def dead_letter(self, batch: Batch, reason: Mapping[str, Any]) -> None:
        """Deliver `batch` as `deliver` does, each change with `reason` beside it.

        Raises what `deliver` raises.
        """
        ...


def open_dead_letter(url: str) -> DeadLetterSink:
    """The dead-letter destination at `url`: an event store URL or ``-`` (module docstring).

    Any other sink is a `ConfigError`: it would keep the changes without the error.
    """
    sink = open_sink(url)
    if not isinstance(sink, DeadLetterSink):
        sink.close()
        raise ConfigError(
            f"{masked(url)} cannot be a dead-letter destination: it would not keep the error "
            "with each change; give an event store URL (sqlite:///dead.db, "
            "postgresql://...) or '-' (standard output)"
        )
    return sink


def reason(sink: str, error: BaseException) -> dict[str, Any]:
    """Why `sink` refused a transaction: the sink's URL, the error, its fix, cause and time."""
    cause = error.__cause__
    return {
        "sink": sink,
        "error": getattr(error, "message", None) or str(error),
        "fix": error.fix if isinstance(error, PermanentSinkError) else None,
        "kind": type(error).__name__,
        "cause": None if cause is None else f"{type(cause).__name__}: {cause}",
        "at": time.time(),
    }
