"""The I/O-free core every backend shares, sync or async.

How an append is decided (`version_matches`, `refused_append` for a retry or a
conflict), how its events are encoded for storage (`encode_batch`), and how
snapshot states are stored and read back (`encode_state`, `decode_state`). Data
and metadata are written with the `rowcast.codec` JSON codec.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..codec import dumps, loads
from ..errors import ConfigError, DuplicateEventId, StoreError, WrongExpectedVersion
from .types import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    ExpectedVersion,
    NewEvent,
)

__all__ = [
    "Encoded",
    "EncodedBatch",
    "decode_state",
    "encode_batch",
    "encode_state",
    "join_groups",
    "prefix_end",
    "refused_append",
    "split_groups",
    "version_matches",
]


def prefix_end(prefix: str) -> str | None:
    """The least string above every string that starts with `prefix`, in code point order
    (None when there is none, or for ""): names in ``[prefix, prefix_end(prefix))`` are
    exactly those starting with `prefix`, a range an index on the name can scan."""
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if code <= 0x10FFFF:
            chars[-1] = chr(0xE000 if 0xD800 <= code <= 0xDFFF else code)  # no surrogates
            return "".join(chars)
        chars.pop()
    return None


def version_matches(expected: ExpectedVersion, actual: int) -> bool:
    """Whether a stream at version `actual` satisfies `expected`."""
    if expected is ANY:
        return True
    if expected is NO_STREAM:
        return actual == 0
    if expected is STREAM_EXISTS:
        return actual > 0
    return expected == actual


class Encoded(str):
    """Event data given as the codec JSON that `dumps` writes for it: stored as it is.

    For rowcast's own writers that have that text at hand already (the store sink
    has each change's JSON); a plain `str` is data like any other.
    """

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    """A batch ready to write: ids as 16 bytes, data and metadata as codec JSON text."""

    ids: list[bytes]
    types: list[str]
    data: list[str]
    metadata: list[str | None]


def encode_batch(events: object) -> EncodedBatch:
    """Check and encode the events of an append (outside any lock or transaction)."""
    if isinstance(events, NewEvent):
        raise TypeError("append takes a list of NewEvent; wrap a single event in [ ]")
    if not isinstance(events, Iterable) or isinstance(events, str | bytes | Mapping):
        raise TypeError(f"append takes a list of NewEvent, not {type(events).__name__}")
    ids: list[bytes] = []
    types: list[str] = []
    data: list[str] = []
    metadata: list[str | None] = []
    for index, event in enumerate(events):
        if type(event) is not NewEvent:
            raise TypeError(
                f"event {index} of the batch is a {type(event).__name__}, not a NewEvent"
            )
        ids.append(event.id.bytes)
        types.append(event.type)
        try:
            value = event.data
            data.append(str(value) if type(value) is Encoded else dumps(value))
            metadata.append(None if event.metadata is None else dumps(event.metadata))
        except TypeError as e:
            raise TypeError(f"event {index} ({event.type!r}): {e}") from None
    if not ids:
        raise ConfigError("append needs at least one event; the batch is empty")
    return EncodedBatch(ids, types, data, metadata)


def split_groups(
    streams: Sequence[str], counts: Sequence[int], batch: EncodedBatch
) -> list[tuple[str, EncodedBatch]]:
    """Group k of `batch`: ``streams[k]`` with the next ``counts[k]`` events."""
    groups: list[tuple[str, EncodedBatch]] = []
    start = 0
    for stream, count in zip(streams, counts, strict=True):
        end = start + count
        part = EncodedBatch(
            batch.ids[start:end],
            batch.types[start:end],
            batch.data[start:end],
            batch.metadata[start:end],
        )
        groups.append((stream, part))
        start = end
    return groups


def join_groups(
    groups: Sequence[tuple[str, EncodedBatch]],
) -> tuple[list[str], list[int], EncodedBatch]:
    """`split_groups`' inverse: the streams, the counts and one batch of every event."""
    joined = EncodedBatch([], [], [], [])
    for _, batch in groups:
        joined.ids.extend(batch.ids)
        joined.types.extend(batch.types)
        joined.data.extend(batch.data)
        joined.metadata.extend(batch.metadata)
    return [s for s, _ in groups], [len(b.ids) for _, b in groups], joined


def refused_append(
    where: str,
    stream: str,
    ids: list[bytes],
    expected: ExpectedVersion,
    current: int | None,
    stored: Mapping[bytes, tuple[str, int, int]],
) -> AppendResult:
    """After a refused append: the first result if the batch is a retry, else the error.

    Every backend's append, once refused, finds which of the batch's `ids` are
    `stored` (id -> (stream, version, position)) and lets this decide (see
    "Idempotency" in the module docstring). `current` is the stream's version when
    `expected` did not match it, None when the batch broke a UNIQUE rule (or the
    backend checked the version already); `where` names the store in errors.
    """
    if current is not None and ids[0] not in stored:  # not a retry: a real conflict
        raise WrongExpectedVersion(stream, expected, current)
    seen: set[bytes] = set()
    for twice in ids:
        if twice in seen:
            duplicate = uuid.UUID(bytes=twice)
            raise DuplicateEventId(
                stream, [duplicate], f"the batch holds event id {duplicate} twice"
            )
        seen.add(twice)
    if not stored:
        raise StoreError(f"event store {where}: append to {stream!r} broke a constraint")
    if len(stored) == len(ids):
        first_stream, first_version, _ = stored[ids[0]]
        if first_stream == stream and all(
            stored[i][:2] == (stream, first_version + k) for k, i in enumerate(ids)
        ):
            _, version, position = stored[ids[-1]]
            return AppendResult(version, position)
    clash = next(i for i in ids if i in stored)
    other, version, _ = stored[clash]
    raise DuplicateEventId(
        stream,
        [uuid.UUID(bytes=i) for i in ids if i in stored],
        f"{len(stored)} of its {len(ids)} event ids are already stored (e.g. "
        f"{uuid.UUID(bytes=clash)} in stream {other!r} at version {version}), and not as "
        "this same batch; a retry must send the same events, a new event needs a new id",
    )


def encode_state(state: object) -> tuple[bytes, bool]:
    """A snapshot state as stored: (bytes, True) for bytes, (codec JSON as UTF-8, False)."""
    if isinstance(state, bytes | bytearray | memoryview):
        return bytes(state), True
    return dumps(state).encode("utf-8"), False


def decode_state(blob: bytes, is_bytes: bool) -> Any:
    """The state `encode_state` stored."""
    return bytes(blob) if is_bytes else loads(blob)
