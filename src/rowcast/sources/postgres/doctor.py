"""``rowcast doctor`` for a PostgreSQL URL: can the server be read by logical replication.

Private to `rowcast.sources.postgres`; its source module re-exports `diagnose`.
"""

from __future__ import annotations

from ...errors import ConfigError
from ..base import Diagnosis
from . import health, setup
from .server import check_name, connect, parse_url, psycopg2

__all__ = ["diagnose"]


def diagnose(url: str) -> Diagnosis:
    """``rowcast doctor`` for a PostgreSQL URL: WAL, privilege, slots, publication, tables,
    and each slot's retained WAL against ``max_slot_wal_keep_size``."""
    target = parse_url(url)
    options = target.options
    slot = check_name("slot", options["slot"]) if options.get("slot") else None
    given = options.get("publication")
    publication = check_name("publication", given) if given else slot
    listed = options.get("tables")
    tables = tuple(t.strip() for t in listed.split(",") if t.strip()) if listed else None
    pg = psycopg2()
    conn = connect(target)
    try:
        cur = conn.cursor()
        cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")  # doctor never writes
        checks = setup.all_checks(cur, slot, publication, target.user, tables)
        cur.execute("SELECT version(), current_database(), pg_current_wal_lsn()")
        version, database, lsn = cur.fetchone()
        facts = [("server", str(version).split(" on ")[0]), ("database", database), ("wal", lsn)]
        facts += health.slot_facts(cur)  # each slot's retained WAL against the limit
    except pg.Error as error:  # the server went away, say
        raise ConfigError(f"{target.masked}: checking the server failed: {error}") from error
    finally:
        conn.close()
    return Diagnosis(
        target.masked,
        facts,
        checks,
        f"rowcast can read this database through slot {slot}."
        if slot
        else "rowcast can read this database (a tail with a temporary slot, a relay with one "
        "named after its checkpoint).",
    )
