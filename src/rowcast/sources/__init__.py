"""Capture sources: where Changes come from.

`rowcast.sources.sqlalchemy.SessionCapture` records what a SQLAlchemy session
writes. Log sources read the database's own change log, so they see every
writer: one subpackage per database, with its server checks and readers
(`rowcast.sources.mysql`: the binlog; `rowcast.sources.postgres`: logical
replication; `rowcast.sources.sqlite`: triggers; each with its initial snapshot),
and `rowcast.sources.outbox` for a transactional outbox table. They share
`LogSource`, and `open_source` picks one by URL.
"""

from .base import LogSource, Source, open_source

__all__ = ["LogSource", "Source", "open_source"]
