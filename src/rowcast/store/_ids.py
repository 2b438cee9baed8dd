"""Event ids: made as time-ordered random UUIDs, and read back from 16 stored bytes.

A private generator, seeded from os.urandom and again in every forked child, is
three times faster than uuid.uuid4(); a user's random.seed() cannot make two
runs produce the same ids. Ids are version-7 UUIDs (RFC 9562: milliseconds since
the epoch, then 74 random bits): new ids land at the end of the unique id index
instead of all over it, which keeps appends to a large store fast.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from typing import Final

__all__ = ["UUIDDraft", "new_event_id", "uuid_from_bytes"]

_rng = random.Random()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_rng.seed)
_UUID_V7: Final = (0x7 << 76) | (0b10 << 62)


def new_event_id() -> uuid.UUID:
    """A time-ordered random (version 7) UUID."""
    random_bits = _rng.getrandbits(74)
    return uuid.UUID(
        int=(time.time_ns() // 1_000_000) << 80
        | (random_bits >> 62) << 64
        | (random_bits & ((1 << 62) - 1))
        | _UUID_V7
    )


class UUIDDraft(uuid.UUID):
    """A UUID in the making: its slots take plain stores, then it becomes a `uuid.UUID`.

    ``UUID(bytes=...)`` checks its argument and costs a quarter of a read; ids
    read back come from the store itself. A draft adds no slot, so
    ``draft.__class__ = uuid.UUID`` is allowed: the very object the
    constructor makes, at about half its cost (see `uuid_from_bytes`).
    """

    __slots__ = ()
    __init__ = object.__init__
    __setattr__ = object.__setattr__  # type: ignore[assignment]


_UNKNOWN_SAFETY = uuid.SafeUUID.unknown


def uuid_from_bytes(raw: bytes) -> uuid.UUID:
    """The UUID of 16 bytes that the store wrote itself (unchecked: fast)."""
    value = UUIDDraft()
    value.int = int.from_bytes(raw, "big")
    value.is_safe = _UNKNOWN_SAFETY
    value.__class__ = uuid.UUID
    made: uuid.UUID = value
    return made
