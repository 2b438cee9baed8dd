"""The replication stream's connection-level helpers: temporary slots, refusals, positions.

Private to `rowcast.sources.postgres`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Sequence
from typing import Any

from ...errors import ConfigError
from .._snapshot import is_position, parse
from ..base import foreign_checkpoint
from .pgoutput import format_lsn, parse_lsn
from .server import Unreachable, psycopg2

__all__ = [
    "Feedback",
    "behind_the_slot",
    "check_position",
    "check_saved",
    "close_stream",
    "confirmed",
    "exported_slot",
    "in_use",
    "is_connection_error",
    "keep_up",
    "parse_position",
    "refuse_a_busy_slot",
    "refuse_a_past_start",
    "resolve_positions",
    "temporary_slot",
]

_RETRY_CODES = ("08", "57P", "53", "55006")  # connection, shutdown, resources, slot in use


def parse_position(text: str, accepted: str) -> int:
    try:
        return parse_lsn(text)
    except ValueError:
        raise ConfigError(
            f"bad PostgreSQL position {text!r}: expected an LSN such as '0/16B3748', {accepted}"
        ) from None


def check_position(value: str, accepted: str, *, start: bool = True) -> None:
    """A `ConfigError` unless `value` is an LSN, 'now', or to start with 'start' or a
    snapshot's position."""
    if value == "now" or (start and value == "start"):
        return
    if start and is_position(value):
        parse(value, parse_lsn)
        return
    parse_position(value, accepted)


def temporary_slot(cur: Any, slot: str) -> int:
    """Create the TEMPORARY pgoutput slot `slot` on the replication connection of `cur` (it
    goes with the connection); where it begins."""
    pg = psycopg2()
    try:
        cur.execute(f"CREATE_REPLICATION_SLOT {slot} TEMPORARY LOGICAL pgoutput NOEXPORT_SNAPSHOT")
    except pg.errors.DuplicateObject as error:  # the last connection's, not yet gone
        raise ConnectionError(f"temporary slot {slot} is still held: {error}") from error
    return parse_lsn(cur.fetchone()[1])


def exported_slot(cur: Any, slot: str | None) -> tuple[int, str]:
    """Create a TEMPORARY pgoutput slot on the replication connection of `cur` that exports
    its snapshot: (its consistent point, the snapshot's name). The snapshot can be imported
    (SET TRANSACTION SNAPSHOT) until the connection runs another command or closes; the
    slot goes with the connection. `slot` None: a name of its own (``rowcast_snapshot_...``)."""
    name = slot or f"rowcast_snapshot_{os.getpid()}_{secrets.token_hex(3)}"
    pg = psycopg2()
    try:
        cur.execute(f"CREATE_REPLICATION_SLOT {name} TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT")
    except pg.errors.DuplicateObject as error:  # the last connection's, not yet gone
        raise ConnectionError(f"temporary slot {name} is still held: {error}") from error
    row = cur.fetchone()
    return parse_lsn(row[1]), str(row[2])


def refuse_a_busy_slot(cur: Any, target: str, slot: str) -> None:
    """A `ConfigError` when another connection reads `slot` now."""
    cur.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    row = cur.fetchone()
    if row and row[0] is not None:
        raise in_use(target, slot, row[0])


def in_use(target: str, slot: str, pid: Any = None) -> ConfigError:
    """The refusal to read a slot another reader holds (pid `pid` when known)."""
    who = f" (pid {pid})" if pid is not None else ""
    return ConfigError(
        f"{target}: replication slot {slot} is in use by another reader{who}: two readers "
        "of one slot take each other's changes. Stop that reader first, or give this one its "
        "own ?slot= name (rowcast tail needs none: it reads with a temporary slot)"
    )


def behind_the_slot(target: str, slot: str, confirmed: str, start: str) -> ConfigError:
    return ConfigError(
        f"{target}: slot {slot} was confirmed up to {confirmed}, past {start} where this "
        "reader begins: the server cannot send the changes in between again (another reader "
        "of the slot took them, or the checkpoint is an older copy). To recover: copy the "
        "tables' rows as they are now (--snapshot initial, or rowcast backfill URL --tables ... "
        "once it streams again), then read on from "
        f"the slot's position explicitly (--from {confirmed}, with an emptied checkpoint)"
    )


#: what a position of this source is (`foreign_checkpoint`)
POSITION = "a PostgreSQL position (an LSN such as '0/16B3748')"


def check_saved(target: str, saved: str, checkpoint: str) -> None:
    """A `ConfigError` when the checkpoint's `saved` position is no PostgreSQL position."""
    try:
        check_position(saved, "'now' or 'start'")
    except ConfigError:
        raise foreign_checkpoint(target, checkpoint, saved, POSITION) from None


def refuse_a_past_start(
    cur: Any,
    target: str,
    slot: str,
    start: str,
    checkpoint: str | None = None,
    others: Sequence[str] = (),
) -> None:
    """Before `slot` is created: a `ConfigError` when `start` (an LSN) is past the server's
    end of WAL, or when the slot does not exist and `start` is not past that end (a slot
    made now begins after it: it could never send what lies before). `checkpoint`: the
    URL of the checkpoint `start` comes from (its slot was dropped or invalidated, or it
    is another reader's: `others`, the other slots its reader is recorded for), checked
    to hold a PostgreSQL position."""
    if checkpoint is not None:
        check_saved(target, start, checkpoint)
    try:
        lsn = parse_lsn(start)
    except ValueError:  # 'now', 'start', a snapshot's position: nothing to check here
        return
    cur.execute(
        "SELECT pg_current_wal_lsn(), EXISTS (SELECT 1 FROM pg_replication_slots "
        "WHERE slot_name = %s)",
        (slot,),
    )
    now, exists = cur.fetchone()
    if lsn > parse_lsn(now):
        raise ConfigError(
            f"{target} has no position {start} yet: its WAL ends at {now} (a position from "
            "another server?)"
        )
    if exists:
        return
    if checkpoint is not None and others:
        raise ConfigError(
            f"{target}: the checkpoint {checkpoint} belongs to the reader of slot "
            f"{', '.join(others)} (its publication says so): it holds {start}, that slot's "
            f"position, not one of slot {slot}, which does not exist yet and, made now, would "
            f"begin after {now} (nothing was created). Each reader needs a checkpoint of its own: "
            f"give this one a new --checkpoint (it starts from now; --snapshot initial copies "
            f"the rows first), or leave out ?slot= to go on reading {others[0]} with it"
        )
    if checkpoint is not None:
        raise ConfigError(
            f"{target}: slot {slot} does not exist (dropped, or invalidated and removed), so "
            f"the changes since {start}, where the checkpoint {checkpoint} is, are gone from "
            f"the server (nothing was created; a slot made now would begin after {now}). If "
            "the checkpoint is another reader's (of another slot), give this reader a new "
            "--checkpoint. To recover: empty the checkpoint and start "
            "again, which makes the slot and streams from now, then run rowcast backfill "
            f"URL --tables ... for the changes missed (or start with --snapshot initial)"
        )
    raise ConfigError(
        f"{target}: slot {slot} does not exist yet, and a slot made now would begin "
        f"after {now}, past {start} where this reader begins: it cannot read the past "
        f"(nothing was created). Read from a slot made before {start} (--from is for an "
        "existing slot), start from now (--from now, which creates the slot), or copy the "
        "rows as they are now (--snapshot initial, or rowcast backfill URL --tables ... once "
        "it streams again)"
    )


def resolve_positions(
    cur: Any, target: str, slot: str, start: str, end: str | None, *, snapshot: bool
) -> tuple[int, int | None]:
    """(start LSN, end LSN) of a reader of `slot` from `start` to `end`, checked against the
    server (`cur`: an autocommit cursor). A start of 0 means the slot's confirmed position
    (with `snapshot`, the new snapshot's consistent point, known once it is made)."""
    cur.execute(
        "SELECT pg_current_wal_lsn(), (SELECT confirmed_flush_lsn FROM "
        "pg_replication_slots WHERE slot_name = %s)",
        (slot,),
    )
    now_text, confirmed = cur.fetchone()
    now = parse_lsn(now_text)
    if start == "now":
        resume = 0 if snapshot else now
    elif start == "start":
        resume = 0
    else:
        resume = parse_position(start, "'now' or 'start'")
        if resume > now:
            raise ConfigError(
                f"{target} has no position {start} yet: its WAL ends at "
                f"{now_text} (a position from another server?)"
            )
        if confirmed and resume < parse_lsn(confirmed):
            raise behind_the_slot(target, slot, confirmed, start)
    if end is None:
        return resume, None
    return resume, now if end == "now" else parse_position(end, "or 'now'")


def confirmed(cur: Any, slot: str) -> int:
    """Where `slot` was confirmed up to (0: no such slot)."""
    cur.execute(
        "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = %s", (slot,)
    )
    row = cur.fetchone()
    return parse_lsn(row[0]) if row and row[0] else 0


def close_stream(cur: Any, resume: int) -> None:
    """Tell the server the last confirmed position, then hang up (never raises)."""
    with contextlib.suppress(Exception):
        if resume:
            cur.send_feedback(write_lsn=resume, flush_lsn=resume, force=True)
    with contextlib.suppress(Exception):
        cur.connection.close()


def is_connection_error(error: BaseException) -> bool:
    """Whether `error` means the server or the connection went away (worth a reconnect)."""
    if isinstance(error, Unreachable | ConnectionError | OSError | EOFError):
        return True
    pg = psycopg2()
    if isinstance(error, pg.OperationalError | pg.InterfaceError | pg.DatabaseError):
        code = getattr(error, "pgcode", None)
    elif _is_psycopg3(error):  # a backfill's chunk reader
        code = getattr(error, "sqlstate", None)
    else:
        return False
    if code is None:  # no server error: the connection broke (a server shutting down
        # ends the COPY stream: psycopg2 then says "no COPY in progress", a DatabaseError)
        return True
    return str(code).startswith(_RETRY_CODES)


def _is_psycopg3(error: BaseException) -> bool:
    module = type(error).__module__
    if not (module == "psycopg" or module.startswith("psycopg.")):
        return False
    import psycopg

    return isinstance(error, psycopg.OperationalError | psycopg.InterfaceError)


class Feedback:
    """One replication stream's reads and status messages: the slot never confirmed past
    what the checkpoint holds.

    psycopg2 confirms on its own: at a server keepalive, when the reader confirmed every
    data message read so far (its flush position at least the last message's start), it
    moves the flush position on to the keepalive's WAL end, sent with the next status
    message. Nothing of the reader's lies in between, but a checkpoint left behind it
    would look, at a restart, like changes another reader took. So `read` keeps how far
    psycopg2 may have moved on by itself (`bound`), and every status message `send`
    sends is preceded by `keep_up` (the reader's: the checkpoint moved there first).
    psycopg2's own periodic messages are made rare (`STATUS_EVERY` times the reader's
    interval): the reader sends its own. A reply the server asks for (after half its
    ``wal_sender_timeout`` without a word, so only when the reader was not reading) is
    the one message sent unguarded.
    """

    STATUS_EVERY = 10

    def __init__(self, cur: Any, keep_up: Callable[[int], None]) -> None:
        self.cur = cur
        self.keep_up = keep_up
        self.flushed = 0  # the highest flush position told to psycopg2
        self.data_start = 0  # where the last data message read starts
        self.bound = 0  # how far psycopg2 may have moved the flush position by itself
        self.kept = 0  # the bound the checkpoint was last brought up to

    def read(self) -> Any:
        """The next message (None: none ready), as ``read_message``."""
        may = self.flushed >= self.data_start  # every message read so far is confirmed
        msg = self.cur.read_message()
        if msg is not None:
            self.data_start = msg.data_start
        if may and self.cur.wal_end > self.bound:
            self.bound = self.cur.wal_end
        return msg

    def send(self, confirm: int = 0, *, force: bool = False, reply: bool = False) -> None:
        """``send_feedback`` with `confirm` as written and flushed, the checkpoint first
        brought up to what psycopg2 may add to it when the message goes now."""
        if (force or reply) and self.bound > self.kept:
            self.keep_up(self.bound)
            self.kept = self.bound
        self.cur.send_feedback(write_lsn=confirm, flush_lsn=confirm, reply=reply, force=force)
        self.flushed = max(self.flushed, confirm)

    def close(self, confirm: int) -> None:
        """Tell the server the last confirmed position, then hang up (never raises)."""
        with contextlib.suppress(Exception):
            if confirm or self.bound > self.kept:
                self.send(confirm, force=True)
        with contextlib.suppress(Exception):
            self.cur.connection.close()


def keep_up(checkpoint: Any, lsn: int) -> None:
    """Bring `checkpoint` (None: nothing to do) up to `lsn`, where psycopg2 may confirm the
    slot by itself (only when nothing read is left unconfirmed: see `Feedback`)."""
    saved = checkpoint.load() if checkpoint is not None else None
    if checkpoint is None or (saved and saved.startswith("snapshot")):
        return
    if lsn > (parse_lsn(saved) if saved else 0):
        checkpoint.save(format_lsn(lsn))
