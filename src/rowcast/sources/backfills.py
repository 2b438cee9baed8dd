"""Backfill requests: asking for one, cancelling it, following it (``rowcast backfill``).

A request is a ``backfill`` row of ``rowcast_signal`` (`rowcast.sources.signal`);
every reader of the database that sees it in its log runs it and records its
progress there (`rowcast.sources._backfill`). ``source.backfill(...)``,
``source.cancel_backfill(id)`` and ``source.backfills()`` call these.

A relay killed mid-backfill takes the request up where its checkpoint is when it
starts again, so following the request waits for it. A tail resumes nothing (its
progress says ``"resumes": false``): killed, it leaves its latest progress behind,
unfinished and never updated again. Once a tail has written no row at all for
`STALE_AFTER` seconds, its unfinished progress is *abandoned*: it no longer holds
`Status.done` up, and a request that no other reader of its tables took is
`Status.abandoned` (``rowcast backfill --wait`` exits 1 at once, saying how to run
it again). A live tail writes rows every chunk, and while it has a backfill
unfinished a heartbeat too, an ``alive`` row every 15 s from a thread of its own
(`rowcast.sources._heartbeat`): one whose output is blocked, or whose log keeps it
waiting, is not taken for stopped; only a dead process falls silent. (A
``stale_after`` under two beats, 30 s, may take a blocked tail for stopped.) How
long ago a row was written is read on the database's clock (it writes ``created``,
and `status` asks it the time: `SignalTable.now`), so the clocks of the tail's
machine and of the one following it do not matter. Progress rows written before
``resumes`` existed count as a relay's (never abandoned). The rows stay: `status`
writes nothing (see there why).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, RowcastError, SourceError
from . import _request
from ._where import check as check_where
from .signal import ALIVE, NAME, SignalRow

if TYPE_CHECKING:
    from ._backfill import Reads

__all__ = ["STALE_AFTER", "ReaderProgress", "Status", "answered", "ask", "cancel", "status"]

#: seconds without a row from a tail before its unfinished progress is abandoned
#: (``status(stale_after=)``, ``rowcast backfill --stale-after``); a live tail with a
#: backfill unfinished writes one every 15 s at least (`rowcast.sources._heartbeat`)
STALE_AFTER = 60.0


@dataclasses.dataclass(frozen=True)
class ReaderProgress:
    """How far one reader got with a request (its latest ``progress`` row)."""

    reader: str
    table: str | None  #: ``schema.table`` being read (None: none left)
    tables_done: int
    tables: int
    rows: int
    done: bool
    cancelled: bool
    error: str | None
    updated: float | None  #: when it last recorded progress (epoch seconds)
    resumes: bool = True  #: a relay (restarted, it takes the request up); False: a tail
    abandoned: bool = False  #: a tail that stopped before finishing: it never will
    names: tuple[str, ...] = ()  #: the ``schema.table`` names it reads for the request


@dataclasses.dataclass(frozen=True)
class Status:
    """A request and each reader's progress on it."""

    id: int
    tables: list[str]  #: the patterns asked for
    where: str | None
    chunk: int
    created: float | None
    cancelled: bool
    readers: list[ReaderProgress]

    @property
    def done(self) -> bool:
        """Whether a reader took it and every reader that took it finished (an
        abandoned tail aside: it never will, and it holds nothing up)."""
        live = [r for r in self.readers if not r.abandoned]
        return bool(live) and all(r.done for r in live) and not self.abandoned

    @property
    def abandoned(self) -> bool:
        """Whether it will never finish: a tail that took it stopped before the end, and
        no other reader that took it reads any of its tables."""
        readers = self.readers
        return any(r.abandoned for r in readers) and all(
            r.abandoned or not r.tables for r in readers
        )

    @property
    def unread(self) -> list[str]:
        """The patterns asked for that match no table any reader that took it reads (each
        relay's ``--tables`` leaves them out: done, it read nothing of them), an abandoned
        tail aside (it read them only in part); none while no reader took it."""
        if not self.readers:
            return []
        names = {name for r in self.readers if not r.abandoned for name in r.names}
        tables = {name.partition(".")[2] for name in names}
        return [
            p
            for p in self.tables
            if not any(fnmatch.fnmatchcase(n, p) for n in names)
            and not any(fnmatch.fnmatchcase(t, p) for t in tables)
        ]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {
            "done": self.done,
            "abandoned": self.abandoned,
            "unread": self.unread,
        }


_DRIVERS = frozenset({"sqlite3", "psycopg2", "psycopg", "pymysql", "MySQLdb", "mariadb"})


@contextlib.contextmanager
def answered(target: str) -> Iterator[None]:
    """The database's refusals of rowcast's own statements as a `SourceError` naming
    them and the grant (a role without rights on ``rowcast_signal``, a server gone)."""
    try:
        yield
    except RowcastError:
        raise
    except Exception as e:
        if type(e).__module__.partition(".")[0] not in _DRIVERS:
            raise  # rowcast's own: a bug, not the database's refusal
        said = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SourceError(
            f"{target}: {said} (a role that asks for, lists or cancels backfills needs "
            f"GRANT SELECT, INSERT ON {NAME} TO it)"
        ) from e


def ask(reads: Reads, target: str, tables: Sequence[str], where: str | None, chunk: int) -> int:
    """Record a request for `tables`; its id. The tables and `where` are checked first."""
    if isinstance(tables, str):
        raise ConfigError(f"tables takes a list of patterns, not the string {tables!r}")
    if not tables:
        raise ConfigError("name the tables to backfill (patterns, e.g. 'orders' or 'shop.*')")
    if (
        not isinstance(chunk, int)
        or isinstance(chunk, bool)
        or not 1 <= chunk <= _request.MAX_CHUNK
    ):
        raise ConfigError(
            f"chunk is a number of rows from 1 to {_request.MAX_CHUNK:,}, not {chunk!r}"
        )
    if where:
        check_where(where)
    try:
        found = reads.tables(list(tables))
        if where:
            for schema, table in found:
                try:
                    reads.chunk(schema, table, None, where, 1)
                except Exception as e:  # the database's own message says what is wrong
                    raise ConfigError(
                        f"{target}: --where {where!r} fails on {schema}.{table}: {str(e).strip()}"
                    ) from e
        signals = reads.signals()
        try:
            reads.prepare(signals)
            return signals.write(
                "backfill", {"tables": list(tables), "where": where or None, "chunk": chunk}
            )
        finally:
            signals.close()
    finally:
        reads.close()


def cancel(reads: Reads, target: str, request: int) -> None:
    """Record that `request` is cancelled (a `ConfigError` when there is no such request)."""
    signals = reads.signals()
    try:
        known = signals.exists() and [r for r in signals.rows("backfill") if r.id == request]
        if not known:
            raise ConfigError(
                f"{target}: there is no backfill {request} (rowcast backfill --status lists them)"
            )
        progress = signals.rows("cancel", "progress", request=request)
        if any(r.kind == "cancel" for r in progress):
            raise ConfigError(f"{target}: backfill {request} is cancelled already")
        took = {r.reader: r for r in progress if r.kind == "progress" and r.reader}
        if took and all(r.data.get("done") for r in took.values()):
            raise ConfigError(
                f"{target}: backfill {request} is done (every reader that took it finished): "
                "there is nothing to cancel"
            )
        signals.write("cancel", request=request)
    finally:
        signals.close()
        reads.close()


def status(reads: Reads, stale_after: float | None = None) -> list[Status]:
    """Every request recorded, oldest first, with each reader's latest progress; a tail
    that wrote nothing for `stale_after` seconds (default `STALE_AFTER`, on the
    database's clock) stopped.

    It only reads: an abandoned tail's rows stay. They are the record that the request
    was taken and will not finish (without them it would read "waiting for a reader",
    and ``--wait`` would wait for its timeout again), a tail judged stopped under a short
    `stale_after` may only be blocked (its next beat or chunk writes a row again), and
    what a kill leaves is one progress row and a few watermarks (``rowcast uninstall``
    drops the table)."""
    stale = STALE_AFTER if stale_after is None else stale_after
    if isinstance(stale, bool) or not isinstance(stale, int | float) or not stale > 0:
        raise ConfigError(f"stale_after is a number of seconds above 0, not {stale_after!r}")
    signals = reads.signals()
    try:
        if not signals.exists():
            return []
        rows = signals.rows("backfill", "cancel", "progress", "low", "high", ALIVE)
        now = signals.now()  # the clock of every row's created: no machine's own
    finally:
        signals.close()
        reads.close()
    cancelled = {r.request for r in rows if r.kind == "cancel"}
    latest: dict[int, dict[str, SignalRow]] = {}
    seen: dict[str, float] = {}  # each reader's newest row, of any request
    for row in rows:
        if row.reader and row.created is not None:
            seen[row.reader] = max(seen.get(row.reader, row.created), row.created)
        if row.kind == "progress" and row.request is not None and row.reader:
            latest.setdefault(row.request, {})[row.reader] = row
    gone = {reader for reader, at in seen.items() if now - at > stale}
    return [
        Status(
            row.id,
            *_request.shown(row.data),
            row.created,
            row.id in cancelled,
            [_progress(p, p.reader in gone) for p in latest.get(row.id, {}).values()],
        )
        for row in rows
        if row.kind == "backfill"
    ]


def _progress(row: SignalRow, stale: bool) -> ReaderProgress:
    data = row.data
    tables = data.get("tables") or []
    index = int(data.get("index", 0))
    resumes = data.get("resumes") is not False  # a row from before it was written: as before
    return ReaderProgress(
        str(row.reader),
        ".".join(tables[index]) if index < len(tables) and not data.get("done") else None,
        min(index, len(tables)),
        len(tables),
        int(data.get("rows", 0)),
        bool(data.get("done")),
        bool(data.get("cancelled")),
        data.get("error"),
        row.created,
        resumes,
        not resumes and stale and not data.get("done"),
        tuple(".".join(map(str, t)) for t in tables),
    )
