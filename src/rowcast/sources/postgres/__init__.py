"""The PostgreSQL logical replication source: `LogicalSource` and ``rowcast doctor``'s `diagnose`.

One module per part: `source` (the `LogicalSource`, its reconnects and
positions), `stream` (the replication connection's helpers), `server` (URL and
connections), `setup` (the server's checks, the slot and the publication),
`pgoutput` (the plugin's messages, decoded), `rows` (messages to changes),
`types` (column values by type OID) and `snapshot` (the initial snapshot, reading
tables by key with `keyset`).
"""

from .source import UNCHANGED, LogicalSource, Unchanged, diagnose

__all__ = ["UNCHANGED", "LogicalSource", "Unchanged", "diagnose"]
