"""Where a relay delivers changes: one module per destination, one contract (`base`)."""

from .base import Sink, change_id, open_sink

__all__ = ["Sink", "change_id", "open_sink"]
