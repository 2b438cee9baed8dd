"""Where a relay keeps its position: the contract (`base`), one module per backend.

`open_checkpoint(url, name)` picks the backend by URL: a file path or ``file://``
(`FileCheckpoint`), a SQL database (`SQLCheckpoint`), Redis (`RedisCheckpoint`);
see `rowcast.checkpoint.base` for the contract every backend keeps.
"""

from .base import BaseCheckpoint, Checkpoint, open_checkpoint
from .file import FileCheckpoint
from .redis import RedisCheckpoint
from .sql import SQLCheckpoint

__all__ = [
    "BaseCheckpoint",
    "Checkpoint",
    "FileCheckpoint",
    "RedisCheckpoint",
    "SQLCheckpoint",
    "open_checkpoint",
]
