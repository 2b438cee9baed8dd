"""The binlog decoder of `rowcast.sources.mysql._decode`, held to python-mysql-replication's.

One binlog stretch of every column type MariaDB logs (NULLs, edge values, every
fractional precision, negative decimals and times, long strings, other charsets,
updates and deletes, a composite key, a table without one) is read twice: by the
library's own reader with its rows fixed up by `rowcast.sources.mysql.rows` (the
reference: what `BinlogSource` gave before it decoded rows itself), and by
`BinlogSource`. Every value must be equal and of the same type, decimals digit for
digit.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pymysql
import pytest

from rowcast.sources.mysql import BinlogSource
from rowcast.sources.mysql.rows import RowDecoder
from rowcast.sources.mysql.server import connect, parse_url, pymysql_connect
from tests.conftest import require_server
from tests.test_relay import server_id

pytestmark = pytest.mark.server

URL = "mysql://root@127.0.0.1:3306/test"

COLUMNS = """
    id INT PRIMARY KEY,
    ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, su SMALLINT UNSIGNED,
    mi MEDIUMINT, mu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED,
    d1 DECIMAL(5, 0), d2 DECIMAL(10, 2), d3 DECIMAL(30, 12), d4 DECIMAL(4, 4), d5 DECIMAL(65, 30),
    f FLOAT, db DOUBLE,
    c CHAR(3), v VARCHAR(20), vl VARCHAR(400), lat VARCHAR(10) CHARACTER SET latin1,
    t TINYTEXT, tx TEXT, mt MEDIUMTEXT, lt LONGTEXT,
    b BLOB, tb TINYBLOB, mb MEDIUMBLOB, bn BINARY(3), vb VARBINARY(10),
    da DATE, tm TIME, tm3 TIME(3), tm6 TIME(6),
    dt0 DATETIME, dt1 DATETIME(1), dt4 DATETIME(4), dt6 DATETIME(6),
    ts0 TIMESTAMP NULL, ts2 TIMESTAMP(2) NULL, ts5 TIMESTAMP(5) NULL, y YEAR,
    j JSON, e ENUM('red', 'green', 'blue'), s SET('x', 'y', 'z'),
    bt1 BIT(1), bt10 BIT(10), bt64 BIT(64), g POINT
"""

ROWS = [
    # every column with a value
    """(1, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295,
    -9223372036854775808, 18446744073709551615,
    -12345, 12345678.91, -123456789012345678.123456789012, 0.1234,
    12345678901234567890123456789012345.123456789012345678901234567891,
    1.5, -2.25e300,
    'abc', 'héllo 😀', REPEAT('é', 400), 'façade', 'tiny', 'text ✓', 'medium', 'long',
    x'00ff10', x'01', x'0203', x'0a0b', x'0c',
    '2024-02-29', '-838:59:59', '12:34:56.789', '-01:02:03.000004',
    '1000-01-01 00:00:00', '2024-01-02 03:04:05.6', '2024-01-02 03:04:05.6789',
    '9999-12-31 23:59:59.999999',
    '1970-01-01 00:00:01', '2038-01-19 03:14:07.99', '2024-05-06 07:08:09.12345', 2155,
    '{"k": [1, 2.5, null], "s": "é"}', 'blue', 'x,z', b'1', b'1000000001',
    b'1111111111111111111111111111111111111111111111111111111111111111',
    ST_GeomFromText('POINT(1 2)'))""",
    # every column NULL but the key
    "(2" + ", NULL" * 49 + ")",
    # zeros, empties and small values
    """(3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0.00, -0.000000000001, -0.0001, 0,
    0, 0,
    '', '', '', '', '', '', '', '',
    '', '', '', x'000000', '',
    '0001-01-01', '00:00:00', '00:00:00.000', '00:00:00.000001',
    '0001-01-01 00:00:00', '2000-01-01 00:00:00.0', '2000-01-01 00:00:00.0001',
    '2000-01-01 00:00:00.000001',
    '2000-01-01 00:00:00', '2000-01-01 00:00:00.01', '2000-01-01 00:00:00.00001', 1901,
    '[]', 'red', '', b'0', b'0', b'0', NULL)""",
]


@pytest.fixture
def table() -> Iterator[str]:
    require_server("mysql")
    name = f"rc_decode_{secrets.token_hex(3)}"
    conn = pymysql.connect(host="127.0.0.1", user="root", database="test", autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {name} ({COLUMNS}) CHARACTER SET utf8mb4")
    yield name
    with conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {name}")
    conn.close()


def position(conn: Any) -> tuple[str, int]:
    with conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        name, pos = cur.fetchone()[:2]
    return str(name), int(pos)


def reference(start: tuple[str, int], end: tuple[str, int], table: str) -> list[tuple[Any, ...]]:
    """The rows as python-mysql-replication decodes them, with rowcast's fixes on top."""
    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication import row_event as library
    from pymysqlreplication.event import XidEvent

    target = parse_url(URL)
    control = connect(target)
    decoder = RowDecoder(lambda: control)
    stream = BinLogStreamReader(
        connection_settings=target.settings(),
        pymysql_wrapper=pymysql_connect,
        server_id=server_id(),
        log_file=start[0],
        log_pos=start[1],
        resume_stream=True,
        blocking=True,
        is_mariadb=False,
        only_events=[
            library.WriteRowsEvent,
            library.UpdateRowsEvent,
            library.DeleteRowsEvent,
            XidEvent,  # the end is a transaction's end
        ],
    )
    found: list[tuple[Any, ...]] = []
    try:
        for event in stream:
            if isinstance(event, library.RowsEvent) and event.table == table:
                found.extend(decoder.rows(event, library))
            if (stream.log_file, stream.log_pos) >= end:
                break
    finally:
        stream.close()
        control.close()
    return found


def same(a: Any, b: Any, where: str) -> None:
    """Equal, of the same type, and decimals with the same digits and exponent."""
    assert type(a) is type(b), f"{where}: {a!r} vs {b!r}"
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, tuple | list):
        assert len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{where}[{k}]")
    elif isinstance(a, Decimal):
        assert a.as_tuple() == b.as_tuple(), f"{where}: {a!r} vs {b!r}"
    elif isinstance(a, dt.datetime | dt.time):
        assert (a, a.tzinfo) == (b, b.tzinfo), f"{where}: {a!r} vs {b!r}"
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


def test_every_value_decodes_as_the_library_decodes_it(table: str) -> None:
    conn = pymysql.connect(host="127.0.0.1", user="root", database="test", autocommit=True)
    start = position(conn)
    with conn.cursor() as cur:
        cur.execute("SET time_zone = '+00:00'")
        for row in ROWS:
            cur.execute(f"INSERT INTO {table} VALUES {row}")
        cur.execute(
            f"INSERT INTO {table} (id, d2, v) VALUES (4, -1.5, 'many'),"
            + ",".join(f"({k}, {k}.25, 'row {k}')" for k in range(5, 40))
        )
        cur.execute(f"UPDATE {table} SET v = CONCAT(v, '!'), e = 'green', s = 'y' WHERE id < 10")
        cur.execute(f"UPDATE {table} SET s = '' WHERE id = 1")
        cur.execute(f"DELETE FROM {table} WHERE id IN (2, 3, 7)")
    end = position(conn)
    conn.close()
    expected = reference(start, end, table)
    source = BinlogSource(
        URL, tables=[f"test.{table}"], start="{}:{}".format(*start), end="{}:{}".format(*end)
    )
    got = [(c.action, c.schema, c.table, c.pk, c.before, c.after) for tx in source for c in tx]
    assert len(got) == len(expected) == 39 + 9 + 1 + 3
    for k, (a, b) in enumerate(zip(got, expected, strict=True)):
        same(a, b, f"change {k}")
