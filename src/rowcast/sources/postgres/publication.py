"""rowcast's publications: made FOR TABLE the captured tables, joined by tables made later.

Private to `rowcast.sources.postgres`. Never ``FOR ALL TABLES``: a published
table without a key or replica identity makes the server refuse the app's
``UPDATE`` and ``DELETE`` on it, so such a table is refused (`keyless_error`)
before anything is created, and one created later is left out with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ...errors import ConfigError
from .server import psycopg2

__all__ = ["add_tables", "create_publication", "keyless_error"]

log = logging.getLogger("rowcast.sources.postgres")


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
