"""rowcast's publications: made FOR TABLE the captured tables, joined by tables made later.

Private to `rowcast.sources.postgres`. Never ``FOR ALL TABLES``: a published
table without a key or replica identity makes the server refuse the app's
``UPDATE`` and ``DELETE`` on it, so such a table is refused (`keyless_error`)
before anything is created, and one created later is left out with a warning.
``rowcast_signal`` (backfill requests and watermarks, `rowcast.sources.signal`) is
published with the tables when it exists (`signal_table`), never read by a snapshot.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from ...errors import ConfigError
from ..signal import NAME as SIGNAL
from .objects import comment, record_name
from .server import psycopg2

__all__ = [
    "add_tables",
    "create_publication",
    "keyless_error",
    "missing_signal",
    "quote",
    "record",
    "signal_fix",
    "signal_table",
]

log = logging.getLogger("rowcast.sources.postgres")

_PLAIN = re.compile(r"[a-z_][a-z0-9_$]*")


def quote(*names: str) -> str:
    """``schema.table`` as SQL would need it written (double quotes only where needed)."""
    return ".".join(n if _PLAIN.fullmatch(n) else '"' + n.replace('"', '""') + '"' for n in names)


def keyless_error(target: str, tables: Sequence[Any]) -> ConfigError:
    """The refusal to publish `tables` (`setup.Table`s) without a key or replica identity,
    with the fixes."""
    names = ", ".join(t.sql for t in tables)
    alters = " ".join(f"ALTER TABLE {t.sql} REPLICA IDENTITY FULL;" for t in tables)
    return ConfigError(
        f"{target}: {names} {'has' if len(tables) == 1 else 'have'} no primary key and no "
        "replica identity: once published, the server would refuse the app's UPDATEs and "
        f"DELETEs on {'it' if len(tables) == 1 else 'them'}. Nothing was created. Fix: {alters} "
        "(or ?replica_identity=full does it), or leave them out with --tables"
    )


def create_publication(cur: Any, publication: str, tables: Sequence[Any], note: str) -> str:
    """CREATE PUBLICATION FOR TABLE the chosen tables (never FOR ALL TABLES: it would make
    the app's keyless tables refuse UPDATEs), with `note` as its comment. Returns what it
    made."""
    pg = psycopg2()
    sql = pg.sql
    statement = sql.SQL("CREATE PUBLICATION {}").format(sql.Identifier(publication))
    if tables:
        names = sql.SQL(", ").join(sql.Identifier(t.schema, t.name) for t in tables)
        statement = sql.SQL("{} FOR TABLE {}").format(statement, names)
    try:
        cur.execute(statement)
        cur.execute(
            sql.SQL("COMMENT ON PUBLICATION {} IS {}").format(
                sql.Identifier(publication), sql.Literal(note)
            )
        )
    except pg.errors.DuplicateObject:  # made by another reader just now: use it
        return "existing"
    except pg.Error as error:
        raise ConfigError(
            f"cannot create publication {publication}: {str(error).strip()} (create it as a "
            f"superuser: {statement.as_string(cur)};)"
        ) from error
    return str(statement.as_string(cur))


def add_tables(cur: Any, publication: str, tables: Sequence[Any]) -> list[Any]:
    """ALTER PUBLICATION ADD TABLE each of `tables`; those added."""
    pg = psycopg2()
    sql = pg.sql
    done = []
    for table in tables:
        statement = sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
            sql.Identifier(publication), sql.Identifier(table.schema, table.name)
        )
        try:
            cur.execute(statement)
        except pg.errors.DuplicateObject:  # added by another reader just now
            continue
        except pg.errors.UndefinedTable:  # dropped just now
            continue
        except pg.Error as error:
            raise ConfigError(
                f"cannot add {table.sql} to publication {publication}: {str(error).strip()} "
                f"(as its owner: {statement.as_string(cur)};)"
            ) from error
        done.append(table)
    return done


def signal_table(cur: Any) -> tuple[str, str] | None:
    """``(schema, "rowcast_signal")`` as the search path finds it, or None when it is missing."""
    cur.execute(
        "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.oid = to_regclass(%s)",
        (SIGNAL,),
    )
    row = cur.fetchone()
    return (str(row[0]), SIGNAL) if row else None


def signal_fix(publication: str, table: tuple[str, str]) -> str:
    """The statement that adds ``rowcast_signal`` (`table`) to `publication`."""
    return f"ALTER PUBLICATION {quote(publication)} ADD TABLE {quote(*table)};"


def missing_signal(
    cur: Any, publication: str, published: bool | frozenset[tuple[str, str]] | None
) -> tuple[str, str] | None:
    """``rowcast_signal`` when it exists and `publication` lacks it (`published`: True for
    ``FOR ALL TABLES``, else the tables it has; None: it does not exist yet)."""
    found = signal_table(cur)
    if found is None or published is True or (published and found in published):
        return None
    return found


def record(cur: Any, slot: str, reader: str) -> None:
    """Record the lasting `slot` just made as rowcast's (for ``rowcast uninstall``) in an
    empty publication; a reader that may not create one (no CREATE on the database) reads
    all the same, and is told how the slot goes."""
    try:
        made = create_publication(cur, record_name(slot), [], comment(slot, reader))
    except ConfigError as e:
        log.warning(
            "slot %s is not recorded as rowcast's (%s), so rowcast uninstall will not list "
            "it: when this reader is done with it, SELECT pg_drop_replication_slot('%s'); "
            "(it holds WAL until then)",
            slot,
            e,
            slot,
        )
    else:
        log.info("recorded slot %s as rowcast's: %s", slot, made)
