"""What rowcast makes in a PostgreSQL database, whose it is, and how it is found again.

Private to `rowcast.sources.postgres` and ``rowcast uninstall``. A reader owns
one replication slot and one publication:

- a reader with a checkpoint (a relay) uses ``rowcast_<label>_<hash>``, derived
  from its checkpoint (`derived_name`), unless ``?slot=`` / ``?publication=`` say;
- a reader without one and without ``?slot=`` (``rowcast tail``) uses a
  ``TEMPORARY`` slot and a publication named ``rowcast_tail_<pid>_<random>``,
  both gone when it stops (the slot with its connection, the publication dropped).

Every publication rowcast creates carries a comment, ``created by rowcast for
slot <slot>, read by <reader>``: that is how a reader recognises a slot that is
another reader's (`slot_reader`), and how ``rowcast uninstall`` finds what is
left (`leftovers`): those publications, their slots and every slot whose name
starts with ``rowcast``. A lasting slot rowcast creates that no such comment names
(``?slot=mine&publication=yours``: a publication of the user's, or rowcast's for
another slot) is recorded by an empty publication ``rowcast_slot_<slot>``
(`record_name`) carrying that comment. A slot is never taken for rowcast's on
other grounds (its plugin, say): a slot rowcast did not make is never listed.
``rowcast_*`` tables (``rowcast_signal``, an outbox...) and functions (an event store's
``rowcast_append``) are listed too, as data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import secrets
from typing import Any

from ..._words import counted
from ...errors import ConfigError
from .._leftovers import what
from .._reader import reader_of
from .server import psycopg2

__all__ = [
    "COMMENT",
    "Leftover",
    "comment",
    "derived_name",
    "drop",
    "is_record",
    "leftovers",
    "reader_of",
    "record_name",
    "slot_reader",
    "slots_of",
    "tail_name",
    "uninstall",
]

COMMENT = "created by rowcast for slot "
_COMMENT = re.compile(r"created by rowcast for slot ([a-z0-9_]+), read by (.*)")
TEMPORARY = "a tail (temporary slot)"  #: the reader of a tail's publication


def derived_name(checkpoint: Any) -> str:
    """``rowcast_<label>_<hash>``: the slot (and publication) of a reader with `checkpoint`."""
    label = str(getattr(checkpoint, "name", "default"))
    if label == "default":
        path = getattr(checkpoint, "path", None)
        label = os.path.basename(str(path)) if path is not None else "relay"
    label = re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")[:30] or "relay"
    digest = hashlib.sha1(reader_of(checkpoint).encode()).hexdigest()[:8]
    return f"rowcast_{label}_{digest}"


def tail_name() -> str:
    """A fresh name for a tail's temporary slot and its publication."""
    return f"rowcast_tail_{os.getpid()}_{secrets.token_hex(3)}"


def record_name(slot: str) -> str:
    """``rowcast_slot_<slot>``: the empty publication that records `slot` as rowcast's when
    no publication of rowcast's names it (the reader's publication is the user's, or
    rowcast's for another slot)."""
    if len(slot) <= 50:
        return f"rowcast_slot_{slot}"
    return f"rowcast_slot_{slot[:41]}_{hashlib.sha1(slot.encode()).hexdigest()[:8]}"


def is_record(publication: str, text: str | None) -> bool:
    """Whether `publication`, commented `text`, is a slot's record (`record_name`): it
    publishes nothing, and no table (``rowcast_signal`` neither) is added to it."""
    found = _COMMENT.fullmatch(str(text or ""))
    return found is not None and publication == record_name(found.group(1)) != found.group(1)


def comment(slot: str, reader: str) -> str:
    return f"{COMMENT}{slot}, read by {reader}"


def slot_reader(cur: Any, slot: str) -> str | None:
    """The reader a rowcast publication records for `slot`, or None when none does."""
    cur.execute(
        "SELECT obj_description(oid, 'pg_publication') FROM pg_publication "
        "WHERE obj_description(oid, 'pg_publication') LIKE %s",
        (f"{COMMENT}{slot},%",),
    )
    for (text,) in cur.fetchall():
        found = _COMMENT.fullmatch(str(text))
        if found and found.group(1) == slot:
            return found.group(2)
    return None


def slots_of(cur: Any, reader: str) -> list[str]:
    """The slots rowcast's publications record `reader` as the reader of."""
    cur.execute(
        "SELECT obj_description(oid, 'pg_publication') FROM pg_publication "
        "WHERE obj_description(oid, 'pg_publication') LIKE %s",
        (f"{COMMENT}%",),
    )
    found = (_COMMENT.fullmatch(str(text)) for (text,) in cur.fetchall())
    return sorted({m.group(1) for m in found if m and m.group(2) == reader})


def is_ours(cur: Any, publication: str) -> bool:
    """Whether rowcast created `publication` (its comment says so)."""
    cur.execute(
        "SELECT obj_description(oid, 'pg_publication') FROM pg_publication WHERE pubname = %s",
        (publication,),
    )
    row = cur.fetchone()
    return bool(row and row[0] and str(row[0]).startswith(COMMENT))


_ACTIVE_PID = re.compile(r"is active for PID (\d+)")


@dataclasses.dataclass(frozen=True)
class Leftover:
    """A slot or publication rowcast left in a database, and the SQL that drops it."""

    kind: str  #: "slot" or "publication"
    name: str
    detail: str  #: e.g. "holding 12 MB of WAL, confirmed up to 0/16B3748"
    active_pid: int | None  #: the backend reading the slot now, or None
    sql: str
    data: bool = False  #: a table of data: dropped only with --include-data


def leftovers(cur: Any) -> list[Leftover]:
    """rowcast's publications in this database, its slots (named by a publication's
    comment or starting with ``rowcast``), then its tables (data: `_tables`)."""
    sql = psycopg2().sql
    cur.execute(
        "SELECT pubname, obj_description(oid, 'pg_publication') FROM pg_publication "
        "WHERE obj_description(oid, 'pg_publication') LIKE %s OR pubname LIKE 'rowcast%%' "
        "ORDER BY 1",
        (f"{COMMENT}%",),
    )
    publications = [(str(n), str(c or "")) for n, c in cur.fetchall()]
    named = {m.group(1) for _, c in publications if (m := _COMMENT.fullmatch(c))}
    cur.execute(
        "SELECT slot_name, active_pid, temporary, confirmed_flush_lsn, "
        "pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)) "
        "FROM pg_replication_slots WHERE database = current_database() "
        "AND (slot_name LIKE 'rowcast%%' OR slot_name = ANY(%s)) ORDER BY 1",
        (sorted(named),),
    )
    found = []
    for slot, pid, temporary, confirmed, held in cur.fetchall():
        kind = "temporary, " if temporary else ""
        found.append(
            Leftover(
                "slot",
                str(slot),
                f"{kind}confirmed up to {confirmed}, holding {held} of WAL",
                pid,
                f"SELECT pg_drop_replication_slot('{slot}');",
            )
        )
    for name, text in publications:
        statement = sql.SQL("DROP PUBLICATION {};").format(sql.Identifier(name))
        found.append(
            Leftover("publication", name, text or "no comment", None, statement.as_string(cur))
        )
    return found + _tables(cur) + _functions(cur)


def _functions(cur: Any) -> list[Leftover]:
    """rowcast's functions (``rowcast_*``, an event store's ``rowcast_append``): data, as
    the tables they write to (dropping one alone would break the store)."""
    cur.execute(
        "SELECT format('%I.%I(%s)', n.nspname, p.proname, "
        "pg_get_function_identity_arguments(p.oid)), n.nspname, p.proname FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.proname LIKE 'rowcast\\_%' "
        "AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 2, 3, 1"
    )
    return [
        Leftover(
            "function",
            f"{schema}.{name}",
            "an event store's append, which writes its tables"
            if name == "rowcast_append"
            else "made by rowcast",
            None,
            f"DROP FUNCTION {signature};",
            True,
        )
        for signature, schema, name in cur.fetchall()
    ]


def _tables(cur: Any) -> list[Leftover]:
    """rowcast's tables (``rowcast_*``, in every schema): `rowcast_signal`, an outbox, ..."""
    sql = psycopg2().sql
    cur.execute(
        "SELECT schemaname, tablename, has_schema_privilege(schemaname, 'USAGE') AND "
        "has_table_privilege(format('%I.%I', schemaname, tablename), 'SELECT') "
        "FROM pg_tables WHERE tablename LIKE 'rowcast\\_%' "
        "AND schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
    )
    found = []
    for schema, table, readable in [(str(s), str(t), r) for s, t, r in cur.fetchall()]:
        name = sql.Identifier(schema, table)
        rows = "rows unknown (this role may not read it)"
        if readable:
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(name))
            rows = counted(cur.fetchone()[0], "row")
        holds, data = what(table)
        statement = sql.SQL("DROP TABLE {};").format(name).as_string(cur)
        detail = f"{holds}, {rows}"
        found.append(Leftover("table", f"{schema}.{table}", detail, None, statement, data))
    return found


def drop(cur: Any, slot: str | None, publication: str) -> None:
    """Drop `slot` (None: none, else with its record) and `publication` when they exist and
    are rowcast's; a slot being read is a `ConfigError` naming the reader's pid."""
    pg = psycopg2()
    try:
        if slot is not None:
            cur.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = %s",
                (slot,),
            )
        for name in [publication, *([record_name(slot)] if slot is not None else [])]:
            if is_ours(cur, name):  # a publication of the user's stays
                cur.execute(pg.sql.SQL("DROP PUBLICATION {}").format(pg.sql.Identifier(name)))
    except pg.Error as error:
        raise ConfigError(f"cannot drop slot {slot}: {str(error).strip()}") from error


def uninstall(url: str, *, apply: bool, include_data: bool = False) -> list[Leftover]:
    """What rowcast left in the database at `url` (`leftovers`), dropped when `apply`
    (its tables of data only with `include_data`).

    A slot being read is never dropped: with `apply`, a `ConfigError` names its pid
    before anything is dropped.
    """
    from .server import connect, parse_url

    target = parse_url(url)
    conn = connect(target)
    try:
        cur = conn.cursor()
        found = leftovers(cur)
        busy = [f"slot {o.name} (pid {o.active_pid})" for o in found if o.active_pid]
        if apply and busy:
            raise ConfigError(
                f"{target.masked}: {', '.join(busy)} is being read: stop that reader "
                "first (a tail's temporary slot goes when it stops), then run this again"
            )
        if apply:
            for leftover in [o for o in found if include_data or not o.data]:
                try:
                    cur.execute(leftover.sql)
                except psycopg2().Error as error:  # e.g. a reader took the slot meanwhile
                    why = " ".join(str(error).split())
                    pid = _ACTIVE_PID.search(why)
                    held = f" (pid {pid.group(1)}) is being read" if pid else f": {why}"
                    raise ConfigError(
                        f"{target.masked}: cannot drop {leftover.kind} {leftover.name}{held}: "
                        "stop that reader first, then run this again"
                    ) from error
        return found
    finally:
        conn.close()
