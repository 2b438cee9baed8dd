"""The SQLite trigger source: `TriggerSource`, `uninstall` and ``rowcast doctor``'s `diagnose`.

One module per part: `source` (the `TriggerSource` and its positions),
`readers` (checkpointed readers and pruning), `tails` (readers without a
checkpoint, which leave nothing behind), `triggers` (the SQL side:
rowcast's tables and triggers), `decode` (their rows back into changes),
`snapshot` (the initial snapshot), `file` (URL, connection, table patterns),
`doctor` (the checks of ``rowcast doctor``) and `leftovers` (``rowcast uninstall``).
"""

from .leftovers import uninstall
from .source import TriggerSource, diagnose

__all__ = ["TriggerSource", "diagnose", "uninstall"]
