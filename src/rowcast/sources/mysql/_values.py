"""One function per column that reads a value of its type from a rows event's bytes.

Private to `rowcast.sources.mysql._decode`. `reader(column)` chooses, once per
column of a table map (a library ``Column``), the function ``read(data, pos) ->
(value, position after it)`` for its type, with everything the type's layout
needs computed up front: a precompiled `struct.Struct`, the charset's codec, a
decimal's groups, a fractional second's width. The values are
python-mysql-replication's, with rowcast's rules (`rowcast.sources.mysql._decode`).
"""

from __future__ import annotations

import codecs
import contextlib
import datetime as dt
import json
import struct
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from ...errors import SourceError

__all__ = ["BLOB", "Reader", "reader"]

Reader = Callable[[bytes, int], tuple[Any, int]]

# column types (MySQL's enum_field_types)
_DECIMAL, _TINY, _SHORT, _LONG, _FLOAT, _DOUBLE, _NULL, _TIMESTAMP = 0, 1, 2, 3, 4, 5, 6, 7
_LONGLONG, _INT24, _DATE, _TIME, _DATETIME, _YEAR, _NEWDATE, _VARCHAR = 8, 9, 10, 11, 12, 13, 14, 15
_BIT, _TIMESTAMP2, _DATETIME2, _TIME2 = 16, 17, 18, 19
_JSON, _NEWDECIMAL, _ENUM, _SET = 245, 246, 247, 248
_BLOB, _STRING, _GEOMETRY = 252, 254, 255

_DIGITS = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)  # bytes of a decimal's leftover digits


def _fixed(fmt: str) -> Reader:
    """A fixed-width value read with one precompiled struct."""
    unpack = struct.Struct(fmt).unpack_from
    size = struct.calcsize(fmt)

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        return unpack(data, pos)[0], pos + size

    return read


def _int24(signed: bool) -> Reader:
    def read(data: bytes, pos: int) -> tuple[Any, int]:
        return int.from_bytes(data[pos : pos + 3], "little", signed=signed), pos + 3

    return read


def _length(size: int) -> Callable[[bytes, int], int]:
    """The little-endian unsigned int of `size` bytes at a position."""
    if size == 1:
        return lambda data, pos: data[pos]
    if size == 2:
        unpack = struct.Struct("<H").unpack_from
        return lambda data, pos: unpack(data, pos)[0]
    return lambda data, pos: int.from_bytes(data[pos : pos + size], "little")


def _text(column: Any, prefix: int) -> Reader:
    """A length-prefixed string, decoded with the column's charset (bytes for binary)."""
    from pymysqlreplication.row_event import RowsEvent

    name = column.character_set_name
    encoding = "utf-8" if name is None else RowsEvent.charset_to_encoding(name)
    try:
        codecs.lookup(encoding)
    except LookupError:  # "binary", or a charset Python lacks: the bytes, as the library does
        encoding = ""
    length = _length(prefix)
    if not encoding:

        def read_bytes(data: bytes, pos: int) -> tuple[Any, int]:
            n = length(data, pos)
            pos += prefix
            return data[pos : pos + n], pos + n

        return read_bytes
    if prefix == 1:

        def read_short(data: bytes, pos: int) -> tuple[Any, int]:
            end = pos + 1 + data[pos]
            return data[pos + 1 : end].decode(encoding), end

        return read_short

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        n = length(data, pos)
        pos += prefix
        return data[pos : pos + n].decode(encoding), pos + n

    return read


def _json_text(read: Reader) -> Reader:
    """MariaDB's JSON: a text column, parsed when it holds JSON (an older row may not)."""

    def parse(data: bytes, pos: int) -> tuple[Any, int]:
        value, pos = read(data, pos)
        if isinstance(value, str | bytes):
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        return value, pos

    return parse


def _decimal(precision: int, scale: int) -> Reader:
    """MySQL's packed DECIMAL, written out as the library writes it (same digits, same exponent).

    The packed value is read as one big-endian int: its top bit set for a positive
    value, every bit flipped for a negative one; then groups of 9 digits (4 bytes)
    with shorter groups at both ends (`_DIGITS` bytes for their digits).
    """
    full_int, left_int = divmod(precision - scale, 9)
    full_frac, left_frac = divmod(scale, 9)
    head, tail = _DIGITS[left_int], _DIGITS[left_frac]
    size = head + 4 * (full_int + full_frac) + tail
    top = 1 << (8 * size - 1)
    negative_flip = top ^ ((1 << (8 * size)) - 1)  # the sign bit back, every other flipped
    tail_bits, tail_mask = 8 * tail, (1 << (8 * tail)) - 1
    tail_format = f"0{left_frac}d"
    from_bytes = int.from_bytes

    if not full_int and not full_frac and head and tail:  # up to 18 digits: most columns

        def read_short(data: bytes, pos: int) -> tuple[Any, int]:
            value = from_bytes(data[pos : pos + size], "big")
            sign = ""
            if value & top:
                value ^= top
            else:
                value ^= negative_flip
                sign = "-"
            # one % operation: cheaper than an f-string around a format() call
            text = "%s%d.%0*d" % (sign, value >> tail_bits, left_frac, value & tail_mask)  # noqa: UP031
            return Decimal(text), pos + size  # from text: exact whatever the decimal context

        return read_short

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        value = from_bytes(data[pos : pos + size], "big")
        sign = ""
        if value & top:
            value ^= top
        else:
            value ^= negative_flip
            sign = "-"
        parts = []
        if tail:
            parts.append(format(value & tail_mask, tail_format))
            value >>= tail_bits
        for _ in range(full_frac):
            parts.append(f"{value & 0xFFFFFFFF:09d}")
            value >>= 32
        parts.append(".")
        for _ in range(full_int):
            parts.append(f"{value & 0xFFFFFFFF:09d}")
            value >>= 32
        if head:
            parts.append(str(value))
        parts.append(sign)
        return Decimal("".join(reversed(parts))), pos + size

    return read


def _fraction(fsp: int) -> tuple[int, Callable[[bytes, int], int]]:
    """The bytes of a fractional second of precision `fsp`, and its microseconds."""
    size = (fsp + 1) // 2
    scale = 10 ** (6 - fsp)

    def micro(data: bytes, pos: int) -> int:
        if not size:
            return 0
        value = int.from_bytes(data[pos : pos + size], "big", signed=True)
        if fsp % 2:
            value = int(value / 10)
        microseconds: int = value * scale
        return microseconds

    return size, micro


def _datetime2(fsp: int) -> Reader:
    extra, micro = _fraction(fsp)
    datetime = dt.datetime
    from_bytes = int.from_bytes

    if not fsp:  # DATETIME: no fraction to read

        def read_seconds(data: bytes, pos: int) -> tuple[Any, int]:
            packed = from_bytes(data[pos : pos + 5], "big")
            year_month = (packed >> 22) & 0x1FFFF
            try:
                value = datetime(
                    year_month // 13,
                    year_month % 13,
                    (packed >> 17) & 0x1F,
                    (packed >> 12) & 0x1F,
                    (packed >> 6) & 0x3F,
                    packed & 0x3F,
                )
            except ValueError:  # a zero date: None, as the library says
                return None, pos + 5
            return value, pos + 5

        return read_seconds

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        packed = int.from_bytes(data[pos : pos + 5], "big")
        year_month = (packed >> 22) & 0x1FFFF
        try:
            value = datetime(
                year_month // 13,
                year_month % 13,
                (packed >> 17) & 0x1F,
                (packed >> 12) & 0x1F,
                (packed >> 6) & 0x3F,
                packed & 0x3F,
            )
        except ValueError:  # a zero date: None, as the library says
            return None, pos + 5 + extra
        us = micro(data, pos + 5)
        if us > 0:
            value = value.replace(microsecond=us)
        return value, pos + 5 + extra

    return read


def _timestamp2(fsp: int) -> Reader:
    extra, micro = _fraction(fsp)
    unpack = struct.Struct(">i").unpack_from
    from_timestamp = dt.datetime.fromtimestamp
    utc = dt.UTC

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        value = from_timestamp(unpack(data, pos)[0], utc)
        us = micro(data, pos + 4)
        if us > 0:
            value = value.replace(microsecond=us)
        return value, pos + 4 + extra

    return read


def _time2(fsp: int) -> Reader:
    extra, micro = _fraction(fsp)
    timedelta = dt.timedelta

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        packed = int.from_bytes(data[pos : pos + 3], "big", signed=True)
        sign = 1 if (packed >> 23) & 1 else -1
        if sign == -1:
            packed = ~packed + 1
        value = (
            timedelta(
                hours=(packed >> 12) & 0x3FF,
                minutes=(packed >> 6) & 0x3F,
                seconds=packed & 0x3F,
                microseconds=micro(data, pos + 3),
            )
            * sign
        )
        return value, pos + 3 + extra

    return read


def _date(data: bytes, pos: int) -> tuple[Any, int]:
    packed = int.from_bytes(data[pos : pos + 3], "little")
    year, month, day = (packed >> 9) & 0x7FFF, (packed >> 5) & 0xF, packed & 0x1F
    if not (year and month and day):  # 0000-00-00 and its kin
        return None, pos + 3
    return dt.date(year, month, day), pos + 3


def _old_time(data: bytes, pos: int) -> tuple[Any, int]:
    t = int.from_bytes(data[pos : pos + 3], "little")
    value = dt.timedelta(hours=int(t / 10000), minutes=int((t % 10000) / 100), seconds=int(t % 100))
    return value, pos + 3


def _old_datetime(data: bytes, pos: int) -> tuple[Any, int]:
    value = int.from_bytes(data[pos : pos + 8], "little")
    if value == 0:
        return None, pos + 8
    date, time = value / 1000000, int(value % 1000000)  # the library's float arithmetic
    year, month, day = int(date / 10000), int((date % 10000) / 100), int(date % 100)
    if not (year and month and day):
        return None, pos + 8
    made = dt.datetime(
        year, month, day, int(time / 10000), int((time % 10000) / 100), int(time % 100)
    )
    return made, pos + 8


def _old_timestamp(data: bytes, pos: int) -> tuple[Any, int]:
    seconds = int.from_bytes(data[pos : pos + 4], "little")
    return dt.datetime.fromtimestamp(seconds, dt.UTC), pos + 4


def _year(data: bytes, pos: int) -> tuple[Any, int]:
    return data[pos] + 1900, pos + 1


def _enum(column: Any) -> Reader:
    size, values = column.size, column.enum_values
    length = _length(size)

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        index = length(data, pos)
        return (values[index] if values else None), pos + size

    return read


def _set(column: Any) -> Reader:
    size, values = column.size, tuple(column.set_values or ())
    length = _length(size)

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        mask = length(data, pos)
        return {v for i, v in enumerate(values) if mask & (1 << i)}, pos + size

    return read


def _bit(column: Any) -> Reader:
    size, mask = column.bytes, (1 << column.bits) - 1

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        return int.from_bytes(data[pos : pos + size], "big") & mask, pos + size

    return read


def _blob(prefix: int) -> Reader:
    length = _length(prefix)

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        n = length(data, pos)
        pos += prefix
        return data[pos : pos + n], pos + n

    return read


def _binary_json(prefix: int) -> Reader:
    from pymysqlreplication.json_binary import parse_json

    length = _length(prefix)

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        n = length(data, pos)
        pos += prefix
        if n == 0:
            return None, pos
        body = data[pos : pos + n]
        return parse_json(body[0], body[1:]), pos + n

    return read


_INTEGERS = {_TINY: "b", _SHORT: "h", _LONG: "i", _LONGLONG: "q"}


def reader(column: Any, parse_json: bool = False) -> Reader:
    """The function that reads one value of `column` (a library ``Column``)."""
    kind = column.type
    if kind in _INTEGERS:
        code = _INTEGERS[kind]
        return _fixed("<" + (code.upper() if column.unsigned else code))
    if kind == _INT24:
        return _int24(not column.unsigned)
    if kind == _FLOAT:
        return _fixed("<f")
    if kind == _DOUBLE:
        return _fixed("<d")
    if kind in (_VARCHAR, _STRING):
        return _text(column, 2 if column.max_length > 255 else 1)
    if kind == _NEWDECIMAL:
        return _decimal(column.precision, column.decimals)
    if kind == _BLOB:
        text = _text(column, column.length_size)
        return _json_text(text) if parse_json else text
    if kind == _DATETIME2:
        return _datetime2(column.fsp)
    if kind == _TIMESTAMP2:
        return _timestamp2(column.fsp)
    if kind == _TIME2:
        return _time2(column.fsp)
    if kind == _DATE:
        return _date
    if kind == _YEAR:
        return _year
    if kind == _ENUM:
        return _enum(column)
    if kind == _SET:
        return _set(column)
    if kind == _BIT:
        return _bit(column)
    if kind == _JSON:
        return _binary_json(column.length_size)
    if kind == _GEOMETRY:
        return _blob(column.length_size)
    if kind == _TIME:
        return _old_time
    if kind == _DATETIME:
        return _old_datetime
    if kind == _TIMESTAMP:
        return _old_timestamp
    raise SourceError(f"rowcast cannot decode MySQL column type {kind} (column {column.name!r})")


BLOB = _BLOB
