"""The MySQL / MariaDB binlog source: `BinlogSource` and ``rowcast doctor``'s `diagnose`.

One module per part: `source` (the `BinlogSource`, its reconnects and
positions), `server` (URL, connection and the server's checks), `rows` (row
events to row images) and `snapshot` (the initial snapshot, before the binlog).
"""

from .source import BinlogSource, diagnose

__all__ = ["BinlogSource", "diagnose"]
