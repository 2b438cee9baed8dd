"""The SQLite trigger source: `TriggerSource`, `uninstall` and ``rowcast doctor``'s `diagnose`.

One module per part: `source` (the `TriggerSource` and its positions),
`readers` (checkpointed readers and pruning), `triggers` (the SQL side:
rowcast's tables and triggers), `decode` (their rows back into changes),
`snapshot` (the initial snapshot), `file` (URL, connection, table patterns) and
`doctor` (the checks of ``rowcast doctor``).
"""

from .source import TriggerSource, diagnose, uninstall

__all__ = ["TriggerSource", "diagnose", "uninstall"]
