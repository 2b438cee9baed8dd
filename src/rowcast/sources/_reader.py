"""Who a reader is: the identity of its checkpoint, from which what it owns is named.

A reader with a checkpoint (a relay) owns what it reads with: a PostgreSQL slot and
publication, a MySQL server id. Each is derived from `reader_of` its checkpoint, so
the same relay gets the same ones every run and another relay other ones.
"""

from __future__ import annotations

from typing import Any

__all__ = ["reader_of"]


def reader_of(checkpoint: Any) -> str:
    """Who reads with `checkpoint`: ``checkpoint <name> at <path or URL>``."""
    where = getattr(checkpoint, "path", None) or getattr(checkpoint, "url", "?")
    return f"checkpoint {getattr(checkpoint, 'name', 'default')} at {where}"
