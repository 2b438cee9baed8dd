"""LogicalSource never harms the app and owns its slot (issue 17), on the real PostgreSQL.

A private database ``rc_pgsafe_<run>`` per module: its keyless tables and
publications touch no one else's. Each test drops the slots and publications
it made (the database goes at the end with whatever is left).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from rowcast import ConfigError
from rowcast.checkpoint import open_checkpoint
from rowcast.sources.postgres import LogicalSource
from tests.conftest import streaming, wait_for
from tests.sources.test_postgres import as_int, drop_slot, private_database

pytestmark = pytest.mark.server

RUN = secrets.token_hex(3)
_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with private_database(f"rc_pgsafe_{RUN}") as url:
        yield url


@contextlib.contextmanager
def emptied(url: str) -> Iterator[Any]:
    """A cursor on `url` with no table in public; its slots and publications dropped after."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    cur = conn.cursor()
    # each test sees only its own tables
    cur.execute(
        "SELECT string_agg(quote_ident(tablename), ', ') FROM pg_tables WHERE schemaname = 'public'"
    )
    names = cur.fetchone()[0]
    if names:
        cur.execute(f"DROP TABLE {names}")
    try:
        yield cur
    finally:
        cur.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE database = current_database()"
        )
        for (slot,) in cur.fetchall():
            drop_slot(cur, slot)
        cur.execute("SELECT pubname FROM pg_publication")
        for (pub,) in cur.fetchall():
            cur.execute(f'DROP PUBLICATION "{pub}"')
        conn.close()


@pytest.fixture
def db(base: str) -> Iterator[Any]:
    with emptied(base) as cur:
        yield cur


@pytest.fixture
def name() -> str:
    return f"rc_pgsafe_{RUN}_{next(_numbers)}"


def slots(db: Any) -> list[tuple[str, bool]]:
    db.execute(
        "SELECT slot_name, temporary FROM pg_replication_slots "
        "WHERE database = current_database() ORDER BY 1"
    )
    return [(str(n), bool(t)) for n, t in db.fetchall()]


def publications(db: Any) -> list[tuple[str, bool]]:
    db.execute("SELECT pubname, puballtables FROM pg_publication ORDER BY 1")
    return [(str(n), bool(a)) for n, a in db.fetchall()]


def published(db: Any, publication: str) -> list[str]:
    db.execute(
        "SELECT tablename FROM pg_publication_tables WHERE pubname = %s ORDER BY 1", (publication,)
    )
    return [str(t) for (t,) in db.fetchall()]


def active(db: Any, slot: str) -> bool:
    db.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    row = db.fetchone()
    return bool(row and row[0])


def lsn(db: Any) -> str:
    db.execute("SELECT pg_current_wal_lsn()")
    return str(db.fetchone()[0])


# ----------------------------------------------------------------- never harm the app


def test_no_tables_named_publishes_each_table_by_name_never_all_tables(
    base: str, db: Any, name: str
) -> None:
    db.execute("CREATE TABLE rc_one (id INT PRIMARY KEY)")
    LogicalSource(f"{base}?slot={name}").setup()
    assert publications(db) == [(name, False)]  # was FOR ALL TABLES
    assert published(db, name) == ["rc_one"]


def test_a_keyless_table_is_refused_before_anything_is_created(
    base: str, db: Any, name: str
) -> None:
    db.execute("CREATE TABLE rc_keyed (id INT PRIMARY KEY)")
    db.execute("CREATE TABLE rc_keyless (a INT, b INT)")
    db.execute("INSERT INTO rc_keyless VALUES (1, 2)")
    for tables in (None, ["rc_*"], ["rc_keyless"]):
        with pytest.raises(ConfigError) as caught:
            LogicalSource(f"{base}?slot={name}", tables=tables).setup()
        message = str(caught.value)
        assert "public.rc_keyless has no primary key and no replica identity" in message
        assert "ALTER TABLE public.rc_keyless REPLICA IDENTITY FULL;" in message
        assert "leave them out with --tables" in message
        assert (slots(db), publications(db)) == ([], [])  # nothing was created
    db.execute("UPDATE rc_keyless SET b = 3")  # the app's writes still work
    # leaving it out, or giving it a replica identity, is enough
    LogicalSource(f"{base}?slot={name}", tables=["rc_keyed"]).setup()
    assert published(db, name) == ["rc_keyed"]
    LogicalSource(f"{base}?slot={name}", replica_identity="full").setup()
    assert published(db, name) == ["rc_keyed", "rc_keyless"]
    db.execute("UPDATE rc_keyless SET b = 4")


def test_tables_created_later_join_the_publication_and_are_read(
    base: str, db: Any, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    db.execute("CREATE TABLE rc_first (id INT PRIMARY KEY)")
    source = LogicalSource(f"{base}?slot={name}", tables=["rc_*"], heartbeat=0.2)
    source.setup()
    with caplog.at_level(logging.WARNING, "rowcast.sources.postgres"), streaming(source) as got:
        wait_for(lambda: active(db, name))
        db.execute("CREATE TABLE rc_later (id INT PRIMARY KEY)")
        db.execute("CREATE TABLE rc_later_keyless (a INT)")
        db.execute("CREATE TABLE other_later (id INT PRIMARY KEY)")  # matches no pattern
        wait_for(lambda: "rc_later" in published(db, name))
        db.execute("INSERT INTO rc_later VALUES (1)")
        db.execute("INSERT INTO rc_later_keyless VALUES (1)")
        db.execute("UPDATE rc_later_keyless SET a = 2")  # the app's writes still work
        db.execute("INSERT INTO rc_first VALUES (2)")
        wait_for(lambda: len(got) == 2)
    assert [(c.table, c.pk) for c in got] == [("rc_later", 1), ("rc_first", 2)]
    assert published(db, name) == ["rc_first", "rc_later"]
    assert "new table public.rc_later_keyless is not captured" in caplog.text


# ----------------------------------------------------------------- a tail leaves nothing


def test_a_reader_without_slot_or_checkpoint_uses_temporary_ones_and_leaves_nothing(
    base: str, db: Any
) -> None:
    db.execute("CREATE TABLE rc_t (id INT PRIMARY KEY)")
    source = LogicalSource(base, heartbeat=0.2)
    assert source.temporary
    with streaming(source) as got:
        wait_for(lambda: slots(db) == [(source.slot, True)])
        assert publications(db) == [(source.publication, False)]
        db.execute("INSERT INTO rc_t VALUES (1)")
        wait_for(lambda: len(got) == 1)
    # the slot goes as its connection's backend exits
    wait_for(lambda: (slots(db), publications(db)) == ([], []))
    source.setup()  # checks only: nothing is made
    assert (slots(db), publications(db)) == ([], [])


def test_a_temporary_slot_cannot_read_from_before_it_began(base: str, db: Any) -> None:
    db.execute("CREATE TABLE rc_t (id INT PRIMARY KEY)")
    past = lsn(db)
    db.execute("INSERT INTO rc_t VALUES (1)")
    with pytest.raises(ConfigError, match=f"--from {past} is behind"):
        list(LogicalSource(base, start=past, end="now"))
    assert (slots(db), publications(db)) == ([], [])


# ----------------------------------------------------------------- a slot is one reader's


def test_a_relay_slot_and_publication_derive_from_its_checkpoint(
    base: str, db: Any, tmp_path: Path
) -> None:
    db.execute("CREATE TABLE rc_t (id INT PRIMARY KEY)")
    one = LogicalSource(base, checkpoint=open_checkpoint(str(tmp_path / "rd.pos")))
    two = LogicalSource(base, checkpoint=open_checkpoint(str(tmp_path / "other.pos")))
    assert one.slot.startswith("rowcast_rd_pos_")
    assert two.slot.startswith("rowcast_other_pos_")
    assert one.slot != two.slot
    assert one.publication == one.slot
    assert not one.temporary
    one.setup()
    assert slots(db) == [(one.slot, False)]
    again = LogicalSource(base, checkpoint=open_checkpoint(str(tmp_path / "rd.pos")))
    assert again.slot == one.slot  # the same checkpoint: the same slot
    named = LogicalSource(f"{base}?slot=mine", checkpoint=open_checkpoint(str(tmp_path / "x")))
    assert (named.slot, named.publication) == ("mine", "mine")


def test_another_reader_of_a_relay_slot_is_refused(base: str, db: Any, tmp_path: Path) -> None:
    db.execute("CREATE TABLE rc_t (id INT PRIMARY KEY)")
    relay = LogicalSource(base, checkpoint=open_checkpoint(str(tmp_path / "rd.pos")))
    relay.setup()
    for other in (
        LogicalSource(f"{base}?slot={relay.slot}", end="now"),  # a tail on the relay's slot
        LogicalSource(
            f"{base}?slot={relay.slot}", checkpoint=open_checkpoint(str(tmp_path / "b.pos"))
        ),
    ):
        with pytest.raises(ConfigError, match="belongs to another reader"):
            other.setup()
        with pytest.raises(ConfigError, match="belongs to another reader"):
            list(other)


def test_a_slot_confirmed_past_the_checkpoint_is_an_error(
    base: str, db: Any, tmp_path: Path
) -> None:
    db.execute("CREATE TABLE rc_t (id INT PRIMARY KEY)")
    checkpoint = open_checkpoint(str(tmp_path / "rd.pos"))
    source = LogicalSource(base, checkpoint=checkpoint, end="now", heartbeat=0.2)
    source.setup()
    db.execute("INSERT INTO rc_t VALUES (1)")
    checkpoint.save(lsn(db))
    db.execute("INSERT INTO rc_t VALUES (2)")  # then something else moves the slot past it
    db.execute("SELECT pg_replication_slot_advance(%s, pg_current_wal_lsn())", (source.slot,))
    with pytest.raises(ConfigError) as caught:
        list(source)
    assert "the server cannot send the changes in between again" in str(caught.value)
    assert "--snapshot initial" in str(caught.value)


def test_an_idle_relay_moves_its_checkpoint_with_the_slot(
    base: str, db: Any, tmp_path: Path
) -> None:
    db.execute("CREATE TABLE rc_t (id INT PRIMARY KEY)")
    db.execute("CREATE TABLE other (id INT PRIMARY KEY)")
    checkpoint = open_checkpoint(str(tmp_path / "rd.pos"))
    source = LogicalSource(base, checkpoint=checkpoint, tables=["rc_t"], feedback=1, heartbeat=0.2)
    with streaming(source):
        wait_for(lambda: bool(slots(db)))
        db.execute("INSERT INTO other VALUES (1)")  # not ours: the slot moves on past it
        after = lsn(db)
        wait_for(lambda: as_int(checkpoint.load() or "0/0") >= as_int(after))
    db.execute("INSERT INTO rc_t VALUES (1)")
    # resuming from the checkpoint is no error: nothing of ours was between
    assert [c.pk for tx in LogicalSource(base, checkpoint=checkpoint, end="now") for c in tx] == [1]
