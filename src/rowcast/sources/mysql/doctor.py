"""``rowcast doctor mysql://...``: can this server's binlog be read, and what would be captured.

Reads only: the binlog settings and the replication privileges
(`rowcast.sources.mysql.server`), the URL's database and its ``tables=``
patterns (`rowcast.sources.mysql.scope`), and a ``?server_id=`` another reader
holds now (`rowcast.sources.mysql.owner`).
"""

from __future__ import annotations

from typing import Any

from ...errors import ConfigError
from ..base import Check, Diagnosis
from . import health as _health
from . import owner, scope
from . import server as _server
from .server import connect, parse_url

__all__ = ["diagnose"]


def diagnose(url: str) -> Diagnosis:
    """The checks, with the server's version and binlog position as facts."""
    target = parse_url(url)
    patterns = [p.strip() for p in target.options.get("tables", "").split(",") if p.strip()]
    conn = connect(target)  # pymysql is importable from here on
    pymysql = _server._pymysql()
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION TRANSACTION READ ONLY")  # doctor never writes
        checks = _server.diagnose(conn, target.user)
        checks += scope.checks(conn, target.database, patterns or None)
        checks += _server_id(conn, target)
        version, position = _server_facts(conn, pymysql)
        kept = _health.binlog_facts(conn)  # the binlogs kept, and their expiry
    except pymysql.err.MySQLError as error:  # the server went away, say
        raise ConfigError(f"{target.masked}: checking the server failed: {error}") from error
    finally:
        conn.close()
    return Diagnosis(
        target.masked,
        [("server", version), ("binlog", position), *kept],
        checks,
        "rowcast can read this server's binlog.",
    )


def _server_id(conn: Any, target: Any) -> list[Check]:
    """A given ``?server_id=`` is free (a relay derives its own, a tail draws one)."""
    raw = target.options.get("server_id")
    if raw is None or not raw.isdigit():
        return []
    try:
        owner.refuse_a_taken_id(conn, target.masked, int(raw), 0)
    except ConfigError as error:
        reader = str(error).split(": ", 1)[-1]
        return [Check(f"server id {raw}", False, "in use", reader)]
    return [Check(f"server id {raw}", True, "free")]


def _server_facts(conn: Any, pymysql: Any) -> tuple[str, str]:
    """The server's version and its current binlog position (or why it is unknown)."""
    with conn.cursor() as cur:
        cur.execute("SELECT VERSION()")
        version = str(cur.fetchone()[0])
        try:
            cur.execute("SHOW MASTER STATUS")
            row = cur.fetchone()
        except pymysql.err.MySQLError as error:  # e.g. no REPLICATION CLIENT privilege
            return version, f"unknown: {error.args[-1]}"
    return version, f"{row[0]}:{row[1]}" if row else "none: log_bin is off"
