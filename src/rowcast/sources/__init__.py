"""Capture sources: where Changes come from.

`rowcast.sources.sqlalchemy.SessionCapture` records what a SQLAlchemy session
writes. Log sources (MySQL/MariaDB binlog, PostgreSQL logical replication,
SQLite triggers, the outbox) read the database's own change log, so they see
every writer; they share `LogSource`, and `open_source` picks one by URL.
"""

from .base import LogSource, Source, open_source

__all__ = ["LogSource", "Source", "open_source"]
