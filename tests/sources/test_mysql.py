"""BinlogSource against the real MariaDB of this machine (row-based binlog on).

`TestBinlogSource` runs the `SourceContract` in a database of its own; the rest is
what only the binlog has: GTIDs, MariaDB's types, XA, log rotation, server settings.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pymysql
import pytest

from rowcast import Change, ConfigError
from rowcast.checkpoint import open_checkpoint
from rowcast.sources import open_source
from rowcast.sources.mysql import BinlogSource
from rowcast.sources.mysql.server import check_settings, connect, diagnose, parse_url
from rowcast.testing import SourceContract
from rowcast.testing.backfill import BackfillContract
from tests.conftest import require_server, streaming, wait_for
from tests.sources.seed import SEED, SEED_EVENTS, events
from tests.test_relay import kill_binlog_dumps_of, server_id

pytestmark = pytest.mark.server

URL = "mysql://root@127.0.0.1:3306/test"
RUN = secrets.token_hex(3)
_numbers = itertools.count(1)


@pytest.fixture
def db() -> Iterator[Any]:
    """A root connection to the test database, with a fresh `test` table."""
    require_server("mysql")
    conn = pymysql.connect(host="127.0.0.1", user="root", database="test", autocommit=True)
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS test")
        cur.execute("CREATE TABLE test (id INT AUTO_INCREMENT PRIMARY KEY, data VARCHAR(20))")
    yield conn
    if conn.open:
        conn.close()


def execute(conn: Any, *statements: str) -> None:
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


def position(conn: Any) -> str:
    with conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        row = cur.fetchone()
    return f"{row[0]}:{row[1]}"


def read(start: str, **options: Any) -> list[list[Change]]:
    """Every transaction from `start` up to the server's current position."""
    return list(BinlogSource(URL, start=start, end="now", **options))


class TestBinlogSource(SourceContract, BackfillContract):
    @pytest.fixture
    def database(self) -> Iterator[None]:
        require_server("mysql")
        self.name = f"rc_src_{RUN}_{next(_numbers)}"  # a database of its own
        admin = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
        execute(admin, f"CREATE DATABASE {self.name}")
        self.conn = pymysql.connect(
            host="127.0.0.1", user="root", database=self.name, autocommit=True
        )
        execute(self.conn, "CREATE TABLE test (id INT AUTO_INCREMENT PRIMARY KEY, data TEXT)")
        yield
        self.conn.close()
        execute(admin, f"DROP DATABASE IF EXISTS {self.name}")
        admin.close()

    def make_source(self, **options: Any) -> BinlogSource:
        return BinlogSource(
            f"mysql://root@127.0.0.1:3306/{self.name}",
            tables=[f"{self.name}.test"],
            server_id=server_id(),  # two readers with one id kick each other off
            heartbeat=0.2,
            **options,
        )

    def start_position(self) -> str:
        return position(self.conn)

    def execute(self, statements: Sequence[str], *, transaction: bool = False) -> None:
        execute(self.conn, *(["BEGIN", *statements, "COMMIT"] if transaction else statements))

    def drop_connections(self) -> int:
        return kill_binlog_dumps_of(self.conn, os.getpid())

    def table_rows(self) -> dict[Any, str]:
        with self.conn.cursor() as cur:
            cur.execute("SELECT id, data FROM test")
            return dict(cur.fetchall())

    def misconfigured_source(self) -> BinlogSource:
        return BinlogSource(f"mysql://root:wrong@127.0.0.1:3306/{self.name}")


def test_txid_is_the_gtid_and_position_the_binlog_file_and_offset(db: Any) -> None:
    start = position(db)
    execute(db, *SEED)
    transactions = read(start, tables=["test.test"])
    assert events(transactions) == SEED_EVENTS
    for tx in transactions:
        assert len({(c.txid, c.position, c.ts) for c in tx}) == 1  # one transaction
        assert tx[0].txid is not None
        assert tx[0].txid.count("-") == 2  # MariaDB GTID domain-server-seq
        assert (tx[0].source, tx[0].schema) == ("mysql", "test")
        name, _, offset = (tx[0].position or "").rpartition(":")
        assert name.startswith(start.rpartition(".")[0])
        assert offset.isdigit()


def test_savepoints_inside_a_transaction(db: Any) -> None:
    start = position(db)
    execute(
        db,
        "BEGIN",
        "INSERT INTO test (data) VALUES ('kept')",
        "SAVEPOINT sp",
        "INSERT INTO test (data) VALUES ('dropped')",
        "ROLLBACK TO SAVEPOINT sp",
        "INSERT INTO test (data) VALUES ('after')",
        "COMMIT",
    )
    (tx,) = read(start, tables=["test.test"])
    assert [c.after["data"] for c in tx if c.after] == ["kept", "after"]


def test_every_type_maps_faithfully_and_survives_the_codec(db: Any) -> None:
    execute(
        db,
        "DROP TABLE IF EXISTS rc_types",
        """CREATE TABLE rc_types (
            id BIGINT UNSIGNED PRIMARY KEY,
            ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, mi MEDIUMINT UNSIGNED, i INT,
            iu INT UNSIGNED, bi BIGINT, dec_ DECIMAL(12, 4), f FLOAT, d DOUBLE,
            c CHAR(3), v VARCHAR(20), t TEXT, b BLOB, bin BINARY(2),
            da DATE, tm TIME, dt6 DATETIME(6), ts TIMESTAMP(3) NULL, y YEAR,
            j JSON, e ENUM('red', 'green'), s SET('x', 'y', 'z'), es SET('x', 'y'),
            bit BIT(10), n INT NULL
        ) CHARACTER SET utf8mb4""",
    )
    start = position(db)
    execute(
        db,
        "SET time_zone = '+00:00'",
        """INSERT INTO rc_types VALUES (
            18446744073709551615, -128, 255, -32768, 16777215, -2147483648,
            4294967295, -9223372036854775808, 12345678.9012, 1.5, 2.25,
            'abc', 'héllo 😀', 'long text ✓', x'00ff10', x'0102',
            '2024-02-29', '-838:59:59', '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05.678',
            2024, '{"k": [1, 2.5, null], "s": "é"}', 'green', 'x,z', '', b'1000000001', NULL
        )""",
    )
    (tx,) = read(start, tables=["test.rc_types"])
    after = tx[0].after
    assert after is not None
    assert after == {
        "id": 18446744073709551615,
        "ti": -128,
        "tu": 255,
        "si": -32768,
        "mi": 16777215,
        "i": -2147483648,
        "iu": 4294967295,
        "bi": -9223372036854775808,
        "dec_": Decimal("12345678.9012"),
        "f": 1.5,
        "d": 2.25,
        "c": "abc",
        "v": "héllo 😀",
        "t": "long text ✓",
        "b": b"\x00\xff\x10",
        "bin": b"\x01\x02",
        "da": dt.date(2024, 2, 29),
        "tm": -dt.timedelta(hours=838, minutes=59, seconds=59),
        "dt6": dt.datetime(2024, 1, 2, 3, 4, 5, 123456),
        "ts": dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC),
        "y": 2024,
        "j": {"k": [1, 2.5, None], "s": "é"},
        "e": "green",
        "s": {"x", "z"},
        "es": set(),
        "bit": 513,
        "n": None,
    }
    assert Change.from_json(tx[0].to_json()) == tx[0]
    execute(db, "DROP TABLE rc_types")


def test_a_null_set_is_none_and_an_empty_set_is_empty_in_every_image(db: Any) -> None:
    execute(
        db,
        "DROP TABLE IF EXISTS rc_sets",
        "CREATE TABLE rc_sets (id INT PRIMARY KEY, s SET('x', 'y') NULL)",
    )
    start = position(db)
    execute(
        db,
        "INSERT INTO rc_sets VALUES (1, NULL), (2, '')",
        "UPDATE rc_sets SET s = '' WHERE id = 1",
        "UPDATE rc_sets SET s = NULL WHERE id = 2",
    )
    changes = [c for tx in read(start, tables=["rc_sets"]) for c in tx]
    assert [(c.before and c.before["s"], c.after and c.after["s"]) for c in changes] == [
        (None, None),  # NULL: None, not an empty set
        (None, set()),
        (None, set()),  # an update's images are no different
        (set(), None),
    ]
    execute(db, "DROP TABLE rc_sets")


def test_an_empty_binary_string_is_bytes(db: Any) -> None:
    execute(
        db,
        "DROP TABLE IF EXISTS rc_bins",
        "CREATE TABLE rc_bins (id INT PRIMARY KEY, b BLOB, vb VARBINARY(4), t TEXT)",
    )
    start = position(db)
    execute(db, "INSERT INTO rc_bins VALUES (1, '', '', ''), (2, 'a', 'b', 'c')")
    changes = [c for tx in read(start, tables=["rc_bins"]) for c in tx]
    assert [c.after for c in changes] == [
        {"id": 1, "b": b"", "vb": b"", "t": ""},
        {"id": 2, "b": b"a", "vb": b"b", "t": "c"},
    ]
    assert [type(c.after["b"]) for c in changes if c.after] == [bytes, bytes]
    execute(db, "DROP TABLE rc_bins")


def test_composite_keys_and_tables_without_a_key(db: Any) -> None:
    execute(
        db,
        "DROP TABLE IF EXISTS rc_pair",
        "DROP TABLE IF EXISTS rc_loose",
        "CREATE TABLE rc_pair (a INT, b VARCHAR(5), v INT, PRIMARY KEY (a, b))",
        "CREATE TABLE rc_loose (x INT, y INT)",
    )
    start = position(db)
    execute(
        db,
        "INSERT INTO rc_pair VALUES (1, 'k', 10)",
        "INSERT INTO rc_loose VALUES (5, 6)",
        "UPDATE rc_loose SET y = 7",
    )
    changes = [c for tx in read(start, tables=["rc_pair", "rc_loose"]) for c in tx]
    assert [(c.name, c.pk) for c in changes] == [
        ("rc_pair_write", (1, "k")),
        ("rc_loose_write", None),
        ("rc_loose_update", None),
    ]
    assert changes[2].before == {"x": 5, "y": 6}
    assert changes[2].after == {"x": 5, "y": 7}
    execute(db, "DROP TABLE rc_pair", "DROP TABLE rc_loose")


def test_alter_table_mid_stream(db: Any) -> None:
    start = position(db)
    execute(
        db,
        "INSERT INTO test (data) VALUES ('before')",
        "ALTER TABLE test ADD COLUMN extra INT DEFAULT 7 AFTER id",
        "INSERT INTO test (data, extra) VALUES ('after', 8)",
        "UPDATE test SET data = 'x' WHERE id = 1",
    )
    changes = [c for tx in read(start, tables=["test.test"]) for c in tx]
    assert [c.after for c in changes] == [
        {"id": 1, "data": "before"},
        {"id": 2, "extra": 8, "data": "after"},
        {"id": 1, "extra": 7, "data": "x"},
    ]


def test_resume_after_a_gtid(db: Any) -> None:
    start = position(db)
    execute(db, *(f"INSERT INTO test (data) VALUES ('{i}')" for i in range(3)))
    first, *rest = read(start, tables=["test.test"])
    again = read(first[0].txid or "", tables=["test.test"])  # MariaDB GTID 0-1-N
    assert events(again) == events(rest) == [("test_write", 2), ("test_write", 3)]


def test_xa_transactions_are_published_at_xa_commit(db: Any) -> None:
    start = position(db)
    execute(
        db,
        "XA START 'rc1'",
        "INSERT INTO test (data) VALUES ('x1')",
        "INSERT INTO test (data) VALUES ('x2')",
        "XA END 'rc1'",
        "XA PREPARE 'rc1'",
        "XA COMMIT 'rc1'",
        "XA START 'rc2'",
        "INSERT INTO test (data) VALUES ('gone')",
        "XA END 'rc2'",
        "XA PREPARE 'rc2'",
        "XA ROLLBACK 'rc2'",
        "INSERT INTO test (data) VALUES ('x3')",
    )
    transactions = read(start, tables=["test.test"])
    assert [[c.after["data"] for c in tx if c.after] for tx in transactions] == [
        ["x1", "x2"],
        ["x3"],
    ]


def test_end_is_reached_across_a_log_rotation_with_nothing_to_read(db: Any) -> None:
    start = position(db)
    execute(db, "FLUSH BINARY LOGS")
    began = time.monotonic()
    assert read(start, tables=["test.test"]) == []
    assert time.monotonic() - began < 10


def test_rows_on_both_sides_of_a_log_rotation_are_read(db: Any) -> None:
    # the next file starts with its own format description: read from it, not assumed
    start = position(db)
    execute(db, "INSERT INTO test (data) VALUES ('before')")
    execute(db, "FLUSH BINARY LOGS")
    execute(db, "INSERT INTO test (data) VALUES ('after')", "UPDATE test SET data = 'x'")
    changes = [c for tx in read(start, tables=["test.test"]) for c in tx]
    assert [(c.name, c.after) for c in changes] == [
        ("test_write", {"id": 1, "data": "before"}),
        ("test_write", {"id": 2, "data": "after"}),
        ("test_update", {"id": 1, "data": "x"}),
        ("test_update", {"id": 2, "data": "x"}),
    ]
    first, last = changes[0].position or "", changes[-1].position or ""
    assert first.rpartition(":")[0] != last.rpartition(":")[0]  # two files


def test_a_killed_connection_after_a_gtid_start_repeats_nothing(db: Any) -> None:
    start = position(db)
    execute(db, "INSERT INTO test (data) VALUES ('0')")
    (first,) = read(start, tables=["test.test"])
    with streaming(
        BinlogSource(URL, start=first[0].txid, tables=["test.test"], heartbeat=0.5)
    ) as got:
        execute(db, "INSERT INTO test (data) VALUES ('1')")
        wait_for(lambda: len(got) == 1)
        assert kill_binlog_dumps_of(db, os.getpid()) == 1  # this reader's, no one else's
        execute(db, "INSERT INTO test (data) VALUES ('2')")
        wait_for(lambda: len(got) >= 2)
        time.sleep(0.5)  # a replay would arrive now
    assert [c.after["data"] for c in got if c.after] == ["1", "2"]


def test_json_parse_falls_back_for_rows_written_before_an_alter(db: Any) -> None:
    execute(db, "DROP TABLE IF EXISTS rc_hist", "CREATE TABLE rc_hist (id INT PRIMARY KEY, t TEXT)")
    start = position(db)
    execute(
        db,
        "INSERT INTO rc_hist VALUES (1, 'plain text')",
        "DELETE FROM rc_hist",
        "ALTER TABLE rc_hist MODIFY t JSON",
        "INSERT INTO rc_hist VALUES (1, '[1]')",
    )
    changes = [c for tx in read(start, tables=["rc_hist"]) for c in tx]
    assert [c.after or c.before for c in changes] == [
        {"id": 1, "t": "plain text"},  # read after the ALTER made t JSON: kept as text
        {"id": 1, "t": "plain text"},
        {"id": 1, "t": [1]},
    ]
    execute(db, "DROP TABLE rc_hist")


def _restart_mariadb() -> None:
    subprocess.run(["mariadb", "--protocol=socket", "-uroot", "-e", "SHUTDOWN"], check=True)
    for _ in range(100):
        if subprocess.run(["pgrep", "-x", "mariadbd"], capture_output=True).returncode:
            break
        time.sleep(0.1)
    subprocess.run(
        [
            "start-stop-daemon",
            "--start",
            "--oknodo",
            "--background",
            "--exec",
            "/usr/sbin/mariadbd",
        ],
        check=True,
    )


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("start-stop-daemon"),
    reason="restarting MariaDB needs root and start-stop-daemon",
)
def test_server_restart_mid_stream_loses_and_repeats_nothing(db: Any) -> None:
    with streaming(
        BinlogSource(URL, start=position(db), tables=["test.test"], heartbeat=0.5)
    ) as got:
        execute(db, *(f"INSERT INTO test (data) VALUES ('a{i}')" for i in range(20)))
        wait_for(lambda: len(got) == 20)  # streaming, then the server goes away
        db.close()
        _restart_mariadb()
        deadline = time.monotonic() + 30
        conn = None
        while conn is None:
            try:
                conn = pymysql.connect(
                    host="127.0.0.1", user="root", database="test", autocommit=True
                )
            except pymysql.err.OperationalError:
                assert time.monotonic() < deadline, "MariaDB did not come back"
                time.sleep(0.2)
        execute(conn, *(f"INSERT INTO test (data) VALUES ('b{i}')" for i in range(20)))
        conn.close()
        wait_for(lambda: len(got) >= 40)
        time.sleep(0.5)  # a duplicate would arrive now
    assert [c.after["data"] for c in got if c.after] == [f"a{i}" for i in range(20)] + [
        f"b{i}" for i in range(20)
    ]


# ----------------------------------------------------------------- errors


def test_wrong_password_and_unreachable_host() -> None:
    require_server("mysql")
    with pytest.raises(ConfigError, match="access denied for user 'root'"):
        BinlogSource("mysql://root:wrong@127.0.0.1:3306/test").check()
    with pytest.raises(ConfigError, match="cannot reach the server"):
        BinlogSource("mysql://root@127.0.0.1:1/test").check()


def test_missing_replication_privileges(db: Any) -> None:
    execute(
        db,
        "DROP USER IF EXISTS 'rc_noperm'@'127.0.0.1'",
        "CREATE USER 'rc_noperm'@'127.0.0.1' IDENTIFIED BY 'pw'",
        "GRANT SELECT ON test.* TO 'rc_noperm'@'127.0.0.1'",
    )
    try:
        with pytest.raises(ConfigError) as caught:
            BinlogSource("mysql://rc_noperm:pw@127.0.0.1:3306/test").check()
        message = str(caught.value)
        assert "privilege REPLICATION SLAVE is missing: GRANT REPLICATION SLAVE ON *.*" in message
        assert "privilege REPLICATION CLIENT is missing" in message
    finally:
        execute(db, "DROP USER 'rc_noperm'@'127.0.0.1'")


@pytest.mark.parametrize(
    ("variable", "bad", "fix"),
    [
        ("binlog_format", "MIXED", "SET GLOBAL binlog_format = 'ROW'"),
        ("binlog_row_image", "MINIMAL", "SET GLOBAL binlog_row_image = 'FULL'"),
        ("binlog_row_metadata", "MINIMAL", "SET GLOBAL binlog_row_metadata = 'FULL'"),
    ],
)
def test_wrong_binlog_settings_are_refused_with_the_fix(
    db: Any, variable: str, bad: str, fix: str
) -> None:
    with db.cursor() as cur:
        cur.execute(f"SELECT @@GLOBAL.{variable}")
        good = cur.fetchone()[0]
        cur.execute(f"SET GLOBAL {variable} = '{bad}'")
    try:
        with pytest.raises(ConfigError, match=fix):
            list(BinlogSource(URL, end="now"))
    finally:
        execute(db, f"SET GLOBAL {variable} = '{good}'")


def test_binlog_off_is_diagnosed_with_the_fix(db: Any) -> None:
    # log_bin cannot be switched off without a restart: check the rule on the real
    # server's own settings with only log_bin changed
    conn = connect(parse_url(URL))
    checks = {c.name: c for c in diagnose(conn, "root")}
    conn.close()
    assert all(c.ok for c in checks.values())
    variables = {name: check.value for name, check in checks.items()}
    variables["log_bin"] = "OFF"
    broken = {
        c.name: c for c in check_settings(variables, ["GRANT ALL PRIVILEGES ON *.* TO x"], "u")
    }
    assert not broken["log_bin"].ok
    assert "log_bin = mysql-bin" in broken["log_bin"].fix


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("mysql:///test", {}, "names no host"),
        ("mysql://root@127.0.0.1:99999/test", {}, "bad port"),
        (URL, {"start": "nonsense"}, "bad binlog position 'nonsense'"),
        (URL, {"end": "file-without-offset"}, "bad binlog position"),
        (URL, {"tables": "test"}, "list of patterns"),
        (URL, {"end": "mysql-bin.000001"}, r"expected 'file:offset'.*or 'now'"),
        (URL, {"server_id": "abc"}, "server_id must be an integer"),
        ("oracle://x@y/z", {}, "no rowcast source for"),
        ("nope", {}, "no rowcast source for"),
    ],
)
def test_bad_urls_and_options(url: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_source(url, **options)


def test_a_position_the_server_does_not_have_is_refused(db: Any) -> None:
    for start in ("mysql-bin.999999:4", "0-1-999999999"):
        with pytest.raises(ConfigError, match=r"has no binlog position|not in the master"):
            read(start)


def test_explicit_start_beats_the_url() -> None:
    assert BinlogSource(URL + "?start=start", start="now").start == "now"
    assert BinlogSource(URL + "?start=start").start == "start"


def test_open_source_and_whose_server_id_it_is(tmp_path: Path) -> None:
    one = open_source(URL + "?server_id=4242&tables=test.test,other")
    assert isinstance(one, BinlogSource)
    assert one.server_id == 4242
    assert one.tables == ("test.test", "other")
    # a reader with a checkpoint (a relay): derived from it, the same every run
    relay = BinlogSource(URL, checkpoint=open_checkpoint(str(tmp_path / "rd.pos")))
    again = BinlogSource(URL, checkpoint=open_checkpoint(str(tmp_path / "rd.pos")))
    other = BinlogSource(URL, checkpoint=open_checkpoint(str(tmp_path / "other.pos")))
    assert relay.server_id == again.server_id != other.server_id
    # without one (a tail): random, its own, never one a relay derives
    tail = BinlogSource(URL)
    assert tail.server_id == tail.server_id != BinlogSource(URL).server_id
    assert tail.server_id > 2_000_100_000 > relay.server_id
    with pytest.raises(ConfigError, match="from 1 to 4294967295"):
        BinlogSource(URL, server_id=2**32)
