"""A refused PostgreSQL relay leaves nothing; ``rowcast uninstall`` finds all rowcast made.

Steps of a new user's walk. A private database ``rc_pgleft_<run>``; every slot and
publication a test leaves is dropped after it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import make_url

from rowcast.checkpoint import open_checkpoint
from rowcast.sources.postgres import LogicalSource
from tests.sources.test_postgres import private_database
from tests.sources.test_postgres_safe import emptied

pytestmark = pytest.mark.server

RUN = secrets.token_hex(3)


def invoke(*args: str) -> Result:
    from rowcast.cli import main

    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with private_database(f"rc_pgleft_{RUN}") as url:
        yield url


@pytest.fixture
def db(base: str) -> Iterator[Any]:
    with emptied(base) as cur:
        cur.execute("CREATE TABLE orders (id INT PRIMARY KEY, note TEXT)")
        yield cur


def left(db: Any) -> tuple[list[str], list[str]]:
    """(slots, publications) in the database."""
    db.execute("SELECT slot_name FROM pg_replication_slots WHERE database = current_database()")
    slots = sorted(str(s) for (s,) in db.fetchall())
    db.execute("SELECT pubname FROM pg_publication")
    return slots, sorted(str(p) for (p,) in db.fetchall())


def said(result: Result) -> str:
    return " ".join(result.stderr.split())


def test_a_relay_given_another_relays_checkpoint_names_it_and_leaves_nothing(
    base: str, db: Any, tmp_path: Path
) -> None:
    pos = str(tmp_path / "relayP.pos")
    other = LogicalSource(base, tables=["orders"], checkpoint=open_checkpoint(pos))
    other.setup()  # relay P, idle: its checkpoint keeps up with the server's end of WAL
    before = left(db)
    db.execute("SELECT pg_current_wal_lsn()")
    with open_checkpoint(pos) as checkpoint:
        checkpoint.save(str(db.fetchone()[0]))
    result = invoke(
        "relay", f"{base}?slot=other", "--tables", "orders", "--to", "-", "--checkpoint", pos
    )
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    # was: slot other made, then "confirmed up to X, past Y ... --from X, with an emptied
    # checkpoint" (the other relay's), or "slot other does not exist (dropped...)"
    assert f"the checkpoint {pos} belongs to the reader of slot {other.slot}" in said(result)
    assert "new --checkpoint" in said(result)
    assert "emptied checkpoint" not in said(result)
    assert left(db) == before  # was: slot other and publication other stayed


def test_a_checkpoint_of_another_kind_of_source_is_refused_before_anything_is_made(
    base: str, db: Any, tmp_path: Path
) -> None:
    pos = tmp_path / "relayF.pos"
    with open_checkpoint(str(pos)) as checkpoint:
        checkpoint.save("mysql-bin.000001:224900048")  # a MySQL relay's
    result = invoke("relay", base, "--tables", "orders", "--to", "-", "--checkpoint", str(pos))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert (
        f"the checkpoint {pos} holds 'mysql-bin.000001:224900048', which is not a PostgreSQL "
        "position" in said(result)
    )
    assert "another kind of source" in said(result)
    assert left(db) == ([], [])  # was: slot rowcast_relayf_pos_<hash> and its publication


def test_uninstall_lists_the_signal_table_as_data_and_drops_it_with_include_data(
    base: str, db: Any
) -> None:
    result = invoke("backfill", base, "--tables", "orders")  # makes rowcast_signal
    assert result.exit_code == 0, result.output
    result = invoke("uninstall", base)
    assert result.exit_code == 0, result.output
    assert "kept (data) table public.rowcast_signal (backfill requests" in result.stdout
    assert 'DROP TABLE "public"."rowcast_signal";' in result.stdout
    invoke("uninstall", base, "--yes")
    db.execute("SELECT to_regclass('public.rowcast_signal') IS NOT NULL")
    assert db.fetchone()[0]  # kept without --include-data
    result = invoke("uninstall", base, "--yes", "--include-data")
    assert result.exit_code == 0, result.output
    assert "dropped table public.rowcast_signal" in result.stdout  # was: never listed
    db.execute("SELECT to_regclass('public.rowcast_signal') IS NULL")
    assert db.fetchone()[0]


def test_uninstall_finds_a_slot_named_by_the_user_and_never_one_rowcast_did_not_make(
    base: str, db: Any, tmp_path: Path
) -> None:
    db.execute("CREATE PUBLICATION apppub FOR TABLE orders")  # the user's own
    appslot, myslot, mine2 = f"rc_app_{RUN}", f"rc_my_{RUN}", f"rc_mine_{RUN}"  # cluster-wide
    db.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (appslot,))  # not ours
    LogicalSource(  # a publication of rowcast's for another slot
        f"{base}?publication=sharedpub", checkpoint=open_checkpoint(str(tmp_path / "a.pos"))
    ).setup()
    for slot, publication, pos in ((myslot, "apppub", "b.pos"), (mine2, "sharedpub", "c.pos")):
        checkpoint = open_checkpoint(str(tmp_path / pos))  # what rowcast relay makes first
        LogicalSource(
            f"{base}?slot={slot}&publication={publication}", checkpoint=checkpoint
        ).setup()
    assert invoke("backfill", base, "--tables", "orders").exit_code == 0
    db.execute("SELECT pubname FROM pg_publication_tables WHERE tablename = 'rowcast_signal'")
    assert sorted(p for (p,) in db.fetchall()) == ["sharedpub"]  # not the records
    result = invoke("uninstall", base)
    assert result.exit_code == 0, result.output
    assert f"would drop slot {myslot}" in result.stdout  # was: not found, holding WAL
    assert f"would drop slot {mine2}" in result.stdout
    assert appslot not in result.stdout
    assert "apppub" not in result.stdout
    result = invoke("uninstall", base, "--yes")
    assert result.exit_code == 0, result.output
    assert left(db) == ([appslot], ["apppub"])


def test_drop_leaves_a_publication_of_the_users(base: str, db: Any, tmp_path: Path) -> None:
    db.execute("CREATE PUBLICATION apppub FOR TABLE orders")
    slot = f"rc_drop_{RUN}"
    source = LogicalSource(
        f"{base}?slot={slot}&publication=apppub",
        checkpoint=open_checkpoint(str(tmp_path / "d.pos")),
    )
    source.setup()
    source.drop()
    assert left(db) == ([], ["apppub"])  # was: the user's publication dropped too


def test_a_slot_of_another_database_is_named_in_a_sentence(
    base: str, db: Any, tmp_path: Path
) -> None:
    slot = f"rc_elsewhere_{RUN}"
    with private_database(f"rc_pgleft2_{RUN}") as elsewhere, emptied(elsewhere) as cur:
        cur.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
        result = invoke(
            "relay", f"{base}?slot={slot}", "--to", "-", "--checkpoint", str(tmp_path / "e.pos")
        )
    assert result.exit_code == 2, result.output
    assert f"slot {slot} belongs to database 'rc_pgleft2_{RUN}'" in said(result)  # was: is belongs


def test_uninstall_drops_the_event_stores_function_with_its_tables(base: str, db: Any) -> None:
    result = invoke("events", "init", base, "--schema", "rc_store")
    assert result.exit_code == 0, result.output
    try:
        result = invoke("uninstall", base)
        assert result.exit_code == 0, result.output
        shown = " ".join(result.stdout.split())
        assert "kept (data) function rc_store.rowcast_append" in shown  # was: never listed
        assert "DROP FUNCTION rc_store.rowcast_append(" in shown
        invoke("uninstall", base, "--yes")
        db.execute("SELECT count(*) FROM pg_proc WHERE proname = 'rowcast_append'")
        assert db.fetchone()[0] == 1  # kept with the store's tables, which it appends to
        result = invoke("uninstall", base, "--yes", "--include-data")
        assert result.exit_code == 0, result.output
        assert "dropped function rc_store.rowcast_append" in " ".join(result.stdout.split())
        db.execute("SELECT count(*) FROM pg_proc WHERE proname = 'rowcast_append'")
        assert db.fetchone()[0] == 0  # was: left behind after its tables
        db.execute("SELECT to_regclass('rc_store.rowcast_events') IS NULL")
        assert db.fetchone()[0]
    finally:
        db.execute("DROP SCHEMA IF EXISTS rc_store CASCADE")


def test_a_reader_that_may_not_create_publications_reads_the_users_with_a_warning(
    base: str, db: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A replication role without CREATE on the database, reading the DBA's publication
    through a named slot: the slot's record (a publication of rowcast's) cannot be made,
    which is said, and the reader reads (was: exit 2 on its first start, its slot left
    behind holding WAL)."""
    role, slot = f"rc_rep_{RUN}", f"rc_norec_{RUN}"
    db.execute("CREATE PUBLICATION apppub FOR TABLE orders")
    db.execute(f"CREATE ROLE {role} LOGIN REPLICATION")
    db.execute(f"GRANT SELECT ON orders TO {role}")
    url = make_url(base).set(username=role, password=None).render_as_string(False)
    try:
        source = LogicalSource(
            f"{url}?slot={slot}&publication=apppub",
            checkpoint=open_checkpoint(str(tmp_path / "r.pos")),
        )
        with caplog.at_level("WARNING", "rowcast"):
            source.setup()
        assert left(db) == ([slot], ["apppub"])
        warned = " ".join(r.getMessage() for r in caplog.records)
        assert f"slot {slot} is not recorded as rowcast's" in warned
        assert f"pg_drop_replication_slot('{slot}')" in warned
    finally:
        db.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                   "WHERE slot_name = %s", (slot,))  # fmt: skip
        db.execute(f"DROP OWNED BY {role}")
        db.execute(f"DROP ROLE {role}")


def test_uninstall_lists_a_table_it_may_not_read_without_its_row_count(base: str, db: Any) -> None:
    """A role that may not read one of rowcast's tables (another role's checkpoint table):
    the table is listed, its rows unknown (was: exit 70, "permission denied", a dry run)."""
    role = f"rc_un_{RUN}"
    db.execute("CREATE TABLE rowcast_checkpoint (name TEXT PRIMARY KEY, position TEXT)")
    db.execute(f"CREATE ROLE {role} LOGIN")
    url = make_url(base).set(username=role, password=None).render_as_string(False)
    try:
        result = invoke("uninstall", url)
        assert result.exit_code == 0, result.output
        shown = " ".join(result.stdout.split())
        assert "public.rowcast_checkpoint" in shown
        assert "rows unknown (this role may not read it)" in shown
    finally:
        db.execute(f"DROP OWNED BY {role}")
        db.execute(f"DROP ROLE {role}")
        db.execute("DROP TABLE IF EXISTS rowcast_checkpoint")


def test_backfill_as_a_role_that_may_not_read_the_signal_table_says_so(base: str, db: Any) -> None:
    """--status, --wait and --cancel as a role without SELECT on rowcast_signal: one line
    with the server's reason and the grant (was: exit 70, "a bug in rowcast")."""
    assert invoke("backfill", base, "--tables", "orders").exit_code == 0  # makes the table
    role = f"rc_bfro_{RUN}"
    db.execute(f"CREATE ROLE {role} LOGIN")
    db.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
    url = make_url(base).set(username=role, password=None).render_as_string(False)
    try:
        for args in (["--status"], ["--cancel", "1"], ["--wait", "--tables", "orders"]):
            result = invoke("backfill", url, *args)
            assert result.exit_code == 2, (args, result.output)
            shown = " ".join(result.output.split())
            assert "permission denied for" in shown, shown  # the table; CREATE on the schema
            assert "--status" not in args or "for table rowcast_signal" in shown, shown
            assert "GRANT SELECT, INSERT ON rowcast_signal TO" in shown, shown
    finally:
        db.execute(f"DROP OWNED BY {role}")
        db.execute(f"DROP ROLE {role}")
        db.execute("DROP TABLE IF EXISTS rowcast_signal")
