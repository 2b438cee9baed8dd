"""The binlog's events that a `BinlogSource` needs, read from the dump's packets.

Private to `rowcast.sources.mysql`. python-mysql-replication opens the
connection and asks the server for the dump (checksums, heartbeats, replica
registration, file and offset or GTID set): its reader's first ``fetchone()``
returns the dump's format description event. From there on the packets are
read here: per event the library builds a packet wrapper and an event object,
and parses every table map again (one per statement); here the few events a
source needs are read from the bytes, each table map is parsed by the library
once (then found by its bytes), and the rows are decoded by the table's
`rowcast.sources.mysql._decode.TableDecoder`.

`events` yields ``(kind, timestamp, a, b)``:

============  ===============================  ============================
kind          a                                b
============  ===============================  ============================
`GTID`        the GTID (MariaDB ``d-s-n``,     MariaDB's flags (None for
              MySQL ``uuid:n``)                MySQL's)
`ROWS`        the event's decoded rows         -
`XID`         the xid                          -
`QUERY`       the statement                    -
`XA_PREPARE`  -                                -
`HEARTBEAT`   -                                -
============  ===============================  ============================

and keeps the library reader's ``log_file`` / ``log_pos`` at the end of the
event it yields, as the library's own loop does.
"""

from __future__ import annotations

import inspect
import struct
from collections.abc import Iterator
from typing import Any

from ._decode import DELETE, UPDATE, WRITE, Decoders, TableDecoder

__all__ = ["GTID", "HEARTBEAT", "QUERY", "ROWS", "XA_PREPARE", "XID", "events"]

GTID, ROWS, XID, QUERY, XA_PREPARE, HEARTBEAT = range(6)

_QUERY, _ROTATE, _FORMAT, _XID, _TABLE_MAP, _HEARTBEAT = 0x02, 0x04, 0x0F, 0x10, 0x13, 0x1B
_MYSQL_GTID, _XA_PREPARE, _MARIADB_GTID = 0x21, 0x26, 0xA2
#: rows events: type -> (kind, post-header length the parsing below knows)
_ROWS = {
    0x17: (WRITE, 8),
    0x18: (UPDATE, 8),
    0x19: (DELETE, 8),
    0x1E: (WRITE, 10),
    0x1F: (UPDATE, 10),
    0x20: (DELETE, 10),
}
_HEADER = struct.Struct("<IBIIIH")  # timestamp, type, server id, size, next position, flags
_U16 = struct.Struct("<H")
_U64 = struct.Struct("<Q")
_CRC32 = 1
_MAX_MAPS = 4096  # table maps kept by their bytes before the cache starts over


class _Reader:
    """The packet loop of one dump (see the module docstring)."""

    def __init__(self, stream: Any, decoders: Decoders) -> None:
        self.stream = stream
        self.decoders = decoders
        self.checksum = 0
        self.post_header: tuple[int, ...] = ()
        self.by_id: dict[int, TableDecoder | None] = {}
        self.maps: dict[bytes, TableDecoder | None] = {}

    def format(self, algorithm: int | None, post_header: tuple[int, ...]) -> None:
        self.checksum = 4 if algorithm == _CRC32 else 0
        self.post_header = tuple(post_header)

    def forget(self) -> None:
        self.by_id.clear()
        self.maps.clear()

    def __iter__(self) -> Iterator[tuple[int, int, Any, Any]]:
        stream = self.stream
        first = stream.fetchone()  # the library connects and asks for the dump
        if first is None:
            return
        self.format(first.checksum_algorithm, first.post_header_len)
        read_packet = stream._stream_connection._read_packet
        unpack_header = _HEADER.unpack_from
        rows_events, by_id = _ROWS, self.by_id
        while True:
            packet = read_packet()
            data = packet.get_all_data()
            if data[0] != 0:
                if data[0] == 0xFE and len(data) < 9:  # EOF: a non-blocking dump ended
                    return
                continue
            timestamp, kind, server_id, _, next_position, _ = unpack_header(data, 1)
            end = len(data) - self.checksum
            if kind == _ROTATE:
                stream.log_pos = _U64.unpack_from(data, 20)[0]
                stream.log_file = data[28:end].decode()
                if timestamp != 0:  # a new file after a restart may reuse table ids
                    self.forget()
                continue
            if next_position:
                stream.log_pos = next_position
            if kind in rows_events:
                action, known = rows_events[kind]
                pos = 20
                decoder = by_id.get(int.from_bytes(data[pos : pos + 6], "little"))
                if decoder is None:
                    continue  # a table not read (or not mapped)
                pos += 8  # the table id, the flags
                if known == 10:  # v2: extra row info, its length counting its own 2 bytes
                    extra = _U16.unpack_from(data, pos)[0]
                    pos += self._extra(kind, known) + extra
                else:
                    pos += self._extra(kind, known)
                count, pos = _length_coded(data, pos)
                width = (count + 7) // 8
                present = data[pos : pos + width * (2 if action == UPDATE else 1)]
                pos += len(present)
                yield ROWS, timestamp, decoder.rows(action, data, pos, end, present), None
            elif kind == _TABLE_MAP:
                self._table_map(packet, data, end)
            elif kind == _MARIADB_GTID:
                sequence, domain = struct.unpack_from("<QI", data, 20)
                yield GTID, timestamp, f"{domain}-{server_id}-{sequence}", data[32]
            elif kind == _XID:
                yield XID, timestamp, _U64.unpack_from(data, 20)[0], None
            elif kind == _QUERY:
                yield QUERY, timestamp, self._query(data, end), None
            elif kind == _MYSQL_GTID:
                sid = data[21:37].hex()
                gno = _U64.unpack_from(data, 37)[0]
                gtid = f"{sid[:8]}-{sid[8:12]}-{sid[12:16]}-{sid[16:20]}-{sid[20:]}:{gno}"
                yield GTID, timestamp, gtid, None
            elif kind == _XA_PREPARE:
                yield XA_PREPARE, timestamp, None, None
            elif kind == _HEARTBEAT:
                yield HEARTBEAT, timestamp, None, None
            elif kind == _FORMAT:  # the next file's (after a rotation)
                self._format(data, end)

    def _extra(self, kind: int, known: int) -> int:
        """Post-header bytes the server declares beyond those known (none, today)."""
        if len(self.post_header) >= kind:
            return max(0, self.post_header[kind - 1] - known)
        return 0

    def _query(self, data: bytes, end: int) -> str:
        schema_length = data[28]
        status_length = _U16.unpack_from(data, 31)[0]
        start = 20 + 13 + self._extra(_QUERY, 13) + status_length + schema_length + 1
        return data[start:end].decode("utf-8", errors="backslashreplace")

    def _format(self, data: bytes, end: int) -> None:
        """A format description event: its post-header lengths and checksum algorithm."""
        # body: version (2), server version (50), created (4), header length (1),
        # post-header lengths, then the checksum algorithm (1) and a checksum (4)
        algorithm = data[len(data) - 5]
        self.format(algorithm, tuple(data[20 + 57 : len(data) - 5]))

    def _table_map(self, packet: Any, data: bytes, end: int) -> None:
        """Remember the decoder of a table map's table id: built once per distinct map."""
        table_id = int.from_bytes(data[20:26], "little")
        body = data[20:end]
        if body in self.maps:
            self.by_id[table_id] = self.maps[body]
            return
        table = _library_table(self.stream, packet, self.checksum, self.post_header)
        decoder = None if table is None else self.decoders.build(table)
        if len(self.maps) >= _MAX_MAPS:
            self.maps.clear()
        self.maps[body] = self.by_id[table_id] = decoder


def _length_coded(data: bytes, pos: int) -> tuple[int, int]:
    """A MySQL length-coded integer at `pos`: (value, position after it)."""
    first = data[pos]
    if first < 251:
        return first, pos + 1
    size = {252: 2, 253: 3, 254: 8}[first]
    return int.from_bytes(data[pos + 1 : pos + 1 + size], "little"), pos + 1 + size


def _library_table(stream: Any, packet: Any, checksum: int, post_header: tuple[int, ...]) -> Any:
    """The library's ``Table`` of a table map packet (parsed by its own TableMapEvent)."""
    from pymysqlreplication.packet import BinLogPacketWrapper
    from pymysqlreplication.row_event import TableMapEvent

    options = {
        "from_packet": packet,
        "table_map": {},
        "ctl_connection": stream._ctl_connection,
        "mysql_version": stream.mysql_version,
        "use_checksum": bool(checksum),
        "allowed_events": frozenset([TableMapEvent]),
        "only_tables": None,
        "ignored_tables": None,
        "only_schemas": None,
        "ignored_schemas": None,
        "freeze_schema": False,
        "ignore_decode_errors": False,
        "verify_checksum": False,
        "optional_meta_data": True,  # the source's check requires binlog_row_metadata=FULL
        "enable_logging": False,
        "use_column_name_cache": False,
        "post_header_lengths": post_header or None,
    }
    accepted = _wrapper_parameters(BinLogPacketWrapper)
    wrapper = BinLogPacketWrapper(**{k: v for k, v in options.items() if k in accepted})
    return None if wrapper.event is None else wrapper.event.get_table()


_PARAMETERS: dict[Any, frozenset[str]] = {}


def _wrapper_parameters(wrapper: Any) -> frozenset[str]:
    found = _PARAMETERS.get(wrapper)
    if found is None:
        found = _PARAMETERS[wrapper] = frozenset(inspect.signature(wrapper).parameters)
    return found


def events(stream: Any, decoders: Decoders) -> _Reader:
    """The events of the library reader `stream` (opened, not yet read), as in the module.

    Iterating asks the server for the dump. `forget()` on the result drops the
    table maps seen (after DDL: a table's next map is parsed again).
    """
    return _Reader(stream, decoders)
