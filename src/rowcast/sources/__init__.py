"""Capture sources: where Changes come from.

`rowcast.sources.sqlalchemy.SessionCapture` records what a SQLAlchemy session
writes. Log-based sources (MySQL/MariaDB binlog, ...) read the database's own
change log, so they see every writer; `open_source` picks one by URL.
"""

from .base import Source, open_source

__all__ = ["Source", "open_source"]
