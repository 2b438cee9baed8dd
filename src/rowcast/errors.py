"""Every error rowcast raises, in one tree.

::

    RowcastError                 anything rowcast raises on purpose
    ├── ConfigError              bad URL, option, server setting or missing extra:
    │                            the message says exactly what to change
    ├── SourceError              a capture source failed while streaming
    ├── StoreError               the event store refused or failed an operation
    │   ├── WrongExpectedVersion append: the stream is not at the expected version
    │   └── DuplicateEventId     append: event ids already stored, not as this batch
    ├── SinkError                a relay sink could not deliver (unclassified: transient)
    │   ├── TransientSinkError   it may take it later (down, timeout, deadlock, full):
    │   │                        the relay retries with backoff
    │   └── PermanentSinkError   it never will as it is (privilege, schema, constraint,
    │                            a change it cannot hold): the relay stops, exit status 3
    ├── CacheError               a cache store failed
    └── AuditError               a revision was to be changed, or cannot be written

Driver errors are translated at the backend boundary (``raise X(...) from e``),
so the original error stays reachable as ``__cause__``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuditError",
    "CacheError",
    "ConfigError",
    "DuplicateEventId",
    "PermanentSinkError",
    "RowcastError",
    "RowcastWarning",
    "SinkError",
    "SourceError",
    "StoreError",
    "TransientSinkError",
    "WrongExpectedVersion",
]


class RowcastError(Exception):
    """Base class of every error rowcast raises on purpose."""


class ConfigError(RowcastError, ValueError):
    """A URL, an option, a server setting or an installed extra is wrong or missing."""


class SourceError(RowcastError):
    """A capture source failed while reading changes."""


class StoreError(RowcastError):
    """The event store refused or failed an operation."""


class SinkError(RowcastError):
    """A relay sink could not deliver a transaction.

    Sinks raise one of the two subclasses below; a plain `SinkError` (from a sink
    that does not classify its errors) is taken for a transient one.
    """


class TransientSinkError(SinkError):
    """The destination may take the batch later: unreachable, a timeout, a deadlock, full.

    The relay delivers the same batch again, with backoff.
    """


class PermanentSinkError(SinkError):
    """The destination will never take the batch as it is (module docstring's tree).

    A missing schema or table, a refused privilege, a constraint or a value the
    destination cannot hold, a key of another type: retrying changes nothing. The
    relay stops (``rowcast relay`` exits with status 3), the checkpoint before the
    refused transaction, unless told to send it to a dead-letter destination.
    `fix` says what to change, when the sink can tell; it ends the message too.
    """

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message if fix is None else f"{message}; {fix}")
        self.message = message
        self.fix = fix

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.fix))


class CacheError(RowcastError):
    """A cache store failed."""


class AuditError(RowcastError):
    """An audit rule was broken: revisions are append-only, never updated nor deleted."""


class RowcastWarning(UserWarning):
    """Something rowcast could not do and will not do silently (e.g. an uncapturable write)."""


class WrongExpectedVersion(StoreError):
    """An append's ``expected_version`` does not match the stream; nothing was appended.

    ``expected`` is what the caller asked for (an int or a `rowcast.store.StreamState`),
    ``actual`` the stream's version when the append was refused (0: no stream).
    """

    def __init__(self, stream: str, expected: Any, actual: int) -> None:
        super().__init__(
            f"stream {stream!r} is at version {actual}, but the append expected {expected!r}; "
            "read the stream again and retry, or append with expected_version=ANY"
        )
        self.stream = stream
        self.expected = expected
        self.actual = actual

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes
        return (type(self), (self.stream, self.expected, self.actual))


class DuplicateEventId(StoreError):
    """An append carries event ids that are already stored, but not as this same batch.

    A batch whose ids are all stored in its stream at consecutive versions is a
    retry and succeeds; this is everything else: a batch that overlaps a stored
    one only in part, ids stored in another stream, or one id twice in a batch.
    Nothing was appended. ``ids`` are the offending ids.
    """

    def __init__(self, stream: str, ids: Any, detail: str) -> None:
        super().__init__(f"append to stream {stream!r} refused: {detail}")
        self.stream = stream
        self.ids = ids
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.stream, self.ids, self.detail))
