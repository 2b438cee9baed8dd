"""The messages of PostgreSQL's built-in ``pgoutput`` plugin, decoded (protocol version 1).

Private to `rowcast.sources.postgres`. A logical replication stream carries
one message per XLogData payload; `decode` turns one payload into one of the
frozen dataclasses below. Column values stay as the server sent them: the
text form as ``bytes``, ``None`` for SQL NULL, or `UNCHANGED` for a TOASTed
value that the UPDATE did not touch and the server therefore did not send.
Types are applied later, per relation (see ``types``). The message
objects are plain (not frozen) dataclasses for speed: treat them as read-only.

Layouts follow the PostgreSQL manual, "Logical Replication Message Formats".
Every integer is big-endian; a String is UTF-8 ending in a zero byte.
"""

from __future__ import annotations

import dataclasses
import enum
import struct

from ...errors import SourceError

__all__ = [
    "UNCHANGED",
    "Begin",
    "Column",
    "Commit",
    "Delete",
    "Insert",
    "Message",
    "Origin",
    "Relation",
    "Truncate",
    "Type",
    "Unchanged",
    "Update",
    "decode",
    "format_lsn",
    "parse_lsn",
    "row_values",
]

PG_EPOCH = 946_684_800  # 2000-01-01T00:00:00Z in Unix seconds: the server's timestamp origin


class Unchanged(enum.StrEnum):
    """The marker for a column value the server did not send (see `UNCHANGED`)."""

    TOAST = "rowcast:unchanged-toast"


UNCHANGED = Unchanged.TOAST
"""A TOASTed column that an UPDATE left as it was: PostgreSQL does not log its value.

It is a `str` enum member equal to ``"rowcast:unchanged-toast"``, so a Change
holding it still goes through the JSON codec (and compares equal after the
trip). Test with ``value is UNCHANGED`` (or ``==`` after JSON).
"""

_Q = struct.Struct(">Q")
_I = struct.Struct(">I")
_H = struct.Struct(">H")
_BEGIN = struct.Struct(">QqI")  # final (commit) LSN, commit time (us since 2000), xid
_COMMIT = struct.Struct(">BQQq")  # flags, commit LSN, end LSN, commit time
_RELATION_HEAD = struct.Struct(">I")
_COLUMN_TAIL = struct.Struct(">Ii")  # type oid, atttypmod
_MESSAGE = struct.Struct(">BQ")  # flags, LSN

Value = bytes | None | Unchanged
Row = tuple[Value, ...]


def format_lsn(lsn: int) -> str:
    """``0x16B3748`` -> ``"0/16B3748"``: how PostgreSQL writes an LSN."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    """``"0/16B3748"`` -> ``0x16B3748``; `ValueError` for anything else."""
    high, sep, low = text.partition("/")
    if not sep or not 1 <= len(high) <= 8 or not 1 <= len(low) <= 8:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(high, 16) << 32) | int(low, 16)


def _ts(microseconds: int) -> float:
    return PG_EPOCH + microseconds / 1_000_000


@dataclasses.dataclass(slots=True)
class Begin:
    final_lsn: int  #: LSN of the transaction's commit record
    commit_ts: float  #: Unix seconds
    xid: int


@dataclasses.dataclass(slots=True)
class Commit:
    flags: int
    commit_lsn: int  #: LSN of the commit record
    end_lsn: int  #: LSN just after it: where reading resumes after this transaction
    commit_ts: float  #: Unix seconds


@dataclasses.dataclass(slots=True)
class Origin:
    commit_lsn: int
    name: str


@dataclasses.dataclass(slots=True)
class Column:
    flags: int  #: bit 1: part of the replica identity (every column under FULL)
    name: str
    type_oid: int
    typmod: int

    @property
    def key(self) -> bool:
        return bool(self.flags & 1)


@dataclasses.dataclass(slots=True)
class Relation:
    """A table's shape, sent before its first change and again after every ALTER."""

    oid: int
    namespace: str
    name: str
    replica_identity: str  #: "d" default (primary key), "n" nothing, "f" full, "i" index
    columns: tuple[Column, ...]


@dataclasses.dataclass(slots=True)
class Type:
    oid: int
    namespace: str
    name: str


@dataclasses.dataclass(slots=True)
class Insert:
    relation_oid: int
    new: Row


@dataclasses.dataclass(slots=True)
class Update:
    relation_oid: int
    old_kind: str | None  #: "O" the whole old row, "K" its key only, None: not sent
    old: Row | None
    new: Row


@dataclasses.dataclass(slots=True)
class Delete:
    relation_oid: int
    old_kind: str  #: "O" the whole old row, "K" its key only (other columns NULL)
    old: Row


@dataclasses.dataclass(slots=True)
class Truncate:
    options: int  #: bit 1: CASCADE, bit 2: RESTART IDENTITY
    relation_oids: tuple[int, ...]


@dataclasses.dataclass(slots=True)
class Message:
    """A ``pg_logical_emit_message`` (sent only when asked with ``messages``)."""

    flags: int
    lsn: int
    prefix: str
    content: bytes


Decoded = Begin | Commit | Origin | Relation | Type | Insert | Update | Delete | Truncate | Message


def _string(data: bytes, pos: int) -> tuple[str, int]:
    end = data.index(0, pos)
    return data[pos:end].decode(), end + 1


def row_values(data: bytes, pos: int) -> tuple[list[Value], int]:
    """The TupleData at `pos` of a message: its column values, and where it ends.

    `IndexError` or `struct.error` when the message is cut short; `SourceError` for a
    column kind rowcast does not ask for (binary).
    """
    count = data[pos] << 8 | data[pos + 1]
    pos += 2
    values: list[Value] = []
    append = values.append
    unpack = _I.unpack_from
    for _ in range(count):
        kind = data[pos]
        if kind == 116:  # 't': text
            start = pos + 5
            pos = start + unpack(data, pos + 1)[0]
            append(data[start:pos])
        elif kind == 110:  # 'n': NULL
            append(None)
            pos += 1
        elif kind == 117:  # 'u': unchanged TOASTed value, not sent
            append(UNCHANGED)
            pos += 1
        else:  # 'b' (binary) is only sent when asked for, and rowcast does not ask
            raise SourceError(f"pgoutput: unexpected column kind {chr(kind)!r} in a row")
    if pos > len(data):
        raise SourceError("pgoutput: truncated row")
    return values, pos


def _relation(data: bytes) -> Relation:
    (oid,) = _RELATION_HEAD.unpack_from(data, 1)
    namespace, pos = _string(data, 5)
    name, pos = _string(data, pos)
    identity = chr(data[pos])
    (count,) = _H.unpack_from(data, pos + 1)
    pos += 3
    columns = []
    for _ in range(count):
        flags = data[pos]
        column, pos = _string(data, pos + 1)
        type_oid, typmod = _COLUMN_TAIL.unpack_from(data, pos)
        pos += 8
        columns.append(Column(flags, column, type_oid, typmod))
    # the manual: an empty namespace means pg_catalog
    return Relation(oid, namespace or "pg_catalog", name, identity, tuple(columns))


def _update(data: bytes) -> Update:
    (oid,) = _I.unpack_from(data, 1)
    kind = chr(data[5])
    old: Row | None = None
    old_kind: str | None = None
    pos = 6
    if kind in ("K", "O"):
        old_kind = kind
        values, pos = row_values(data, pos)
        old = tuple(values)
        kind = chr(data[pos])
        pos += 1
    if kind != "N":
        raise SourceError(f"pgoutput: malformed Update message (tuple kind {kind!r})")
    new, _ = row_values(data, pos)
    return Update(oid, old_kind, old, tuple(new))


def decode(data: bytes) -> Decoded:
    """One pgoutput message; `SourceError` for a kind this protocol version does not send."""
    try:
        kind = data[0]
        if kind == 73:  # 'I'
            (oid,) = _I.unpack_from(data, 1)
            if data[5] != 78:  # 'N'
                raise SourceError("pgoutput: malformed Insert message")
            return Insert(oid, tuple(row_values(data, 6)[0]))
        if kind == 85:  # 'U'
            return _update(data)
        if kind == 68:  # 'D'
            (oid,) = _I.unpack_from(data, 1)
            return Delete(oid, chr(data[5]), tuple(row_values(data, 6)[0]))
        if kind == 66:  # 'B'
            final_lsn, ts, xid = _BEGIN.unpack_from(data, 1)
            return Begin(final_lsn, _ts(ts), xid)
        if kind == 67:  # 'C'
            flags, commit_lsn, end_lsn, ts = _COMMIT.unpack_from(data, 1)
            return Commit(flags, commit_lsn, end_lsn, _ts(ts))
        if kind == 82:  # 'R'
            return _relation(data)
        if kind == 89:  # 'Y'
            (oid,) = _I.unpack_from(data, 1)
            namespace, pos = _string(data, 5)
            name, _ = _string(data, pos)
            return Type(oid, namespace or "pg_catalog", name)
        if kind == 84:  # 'T'
            (count,) = _I.unpack_from(data, 1)
            oids = struct.unpack_from(f">{count}I", data, 6)
            return Truncate(data[5], oids)
        if kind == 79:  # 'O'
            (lsn,) = _Q.unpack_from(data, 1)
            return Origin(lsn, _string(data, 9)[0])
        if kind == 77:  # 'M'
            flags, lsn = _MESSAGE.unpack_from(data, 1)
            prefix, pos = _string(data, 10)
            (size,) = _I.unpack_from(data, pos)
            return Message(flags, lsn, prefix, bytes(data[pos + 4 : pos + 4 + size]))
    except (IndexError, ValueError, struct.error) as error:
        raise SourceError(f"pgoutput: truncated or malformed message: {error}") from error
    raise SourceError(
        f"pgoutput: unknown message kind {chr(data[0])!r} (rowcast asks for protocol version 1)"
    )
