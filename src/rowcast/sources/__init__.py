"""Capture sources: where Changes come from.

`rowcast.sources.sqlalchemy.SessionCapture` records what a SQLAlchemy session
writes. Log-based sources (binlog, logical replication, SQLite triggers) are
opened by URL and capture every writer.
"""
