"""`StdoutSink`: JSON lines on standard output (``--to -``).

One line per change, in commit order: the change's ``Change.to_json()`` object
with its deterministic id first::

    {"id":"0b6f...","action":"write","schema":"shop","table":"orders","pk":7,
     "before":null,"after":{"id":7,"total":{"$decimal":"12.50"}},"ts":1714564800.0,
     "txid":"0-1-42","position":"mysql-bin.000003:1234","source":"mysql"}

(one line in the output; values that JSON has no type for are tagged as
`rowcast.codec` describes). A batch is written, then flushed: `deliver`
returns once the operating system has the lines. A re-delivered batch prints its
lines again, with the same ids, so a consumer can skip what it has seen.

A closed pipe (``rowcast relay ... --to - | head``) raises `BrokenPipeError`, which
a relay does not retry: there is nobody left to deliver to. Any other write error
is a `TransientSinkError` (a full disk under a redirection), a closed stream a
`PermanentSinkError`.

As a dead-letter destination (``--dead-letter -``), each refused change is a line
with a ``dead_letter`` object after its id: the sink that refused it and the error
(`rowcast.sinks.deadletter`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from ..codec import dumps
from ..errors import ConfigError, PermanentSinkError, TransientSinkError
from .base import Batch, encoded

__all__ = ["StdoutSink"]


class StdoutSink:
    """Writes each change as one JSON line to `stream` (default: ``sys.stdout`` at delivery)."""

    def __init__(self, url: str = "-", *, stream: TextIO | None = None, **options: Any) -> None:
        if url != "-":
            raise ConfigError(f"the stdout sink's URL is '-', not {url!r}")
        if options:
            raise ConfigError(f"the stdout sink takes no options, not {sorted(options)}")
        self.url = url
        self._stream = stream

    def check(self) -> None:
        """Nothing to check: standard output is there or the process would not be."""

    def deliver(self, batch: Batch) -> None:
        """Write one line per change of `batch`, in commit order, then flush."""
        # every body is '{"action":...}': the id goes in front
        lines = [f'{{"id":"{change_id}",{body[1:]}\n' for change_id, _, body in encoded(batch)]
        self._write(lines)

    def dead_letter(self, batch: Batch, reason: Mapping[str, Any]) -> None:
        """Write `batch` as `deliver` does, each line with ``"dead_letter": reason``."""
        note = dumps(dict(reason))
        self._write(
            f'{{"id":"{change_id}","dead_letter":{note},{body[1:]}\n'
            for change_id, _, body in encoded(batch)
        )

    def _write(self, lines: Iterable[str]) -> None:
        stream = self._stream if self._stream is not None else sys.stdout
        try:
            stream.write("".join(lines))
            stream.flush()
        except BrokenPipeError:
            raise
        except ValueError as e:  # the stream was closed
            raise PermanentSinkError(f"stdout sink: writing failed: {e}") from e
        except OSError as e:
            raise TransientSinkError(f"stdout sink: writing failed: {e}") from e

    def close(self) -> None:
        """Nothing to release: standard output belongs to the process."""
