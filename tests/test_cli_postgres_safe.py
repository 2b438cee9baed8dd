"""``rowcast tail``, ``relay`` and ``uninstall`` leave the app's PostgreSQL unharmed (issue 17).

Each test reproduces a user's step from the issue. A private database
``rc_pgclis_<run>``; every slot and publication a test leaves is dropped after it.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from rowcast.checkpoint import open_checkpoint
from rowcast.sources.postgres import LogicalSource
from tests.conftest import wait_for
from tests.sources.test_postgres import private_database
from tests.sources.test_postgres_safe import emptied

pytestmark = pytest.mark.server

ROWCAST = Path(sys.executable).with_name("rowcast")
RUN = secrets.token_hex(3)


def invoke(*args: str) -> Result:
    from rowcast.cli import main

    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with private_database(f"rc_pgclis_{RUN}") as url:
        yield url


@pytest.fixture
def db(base: str) -> Iterator[Any]:
    with emptied(base) as cur:
        yield cur


def left(db: Any) -> tuple[list[str], list[str]]:
    """(slots, publications) in the database."""
    db.execute("SELECT slot_name FROM pg_replication_slots WHERE database = current_database()")
    slots = sorted(str(s) for (s,) in db.fetchall())
    db.execute("SELECT pubname FROM pg_publication")
    return slots, sorted(str(p) for (p,) in db.fetchall())


def tail(url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(ROWCAST), "tail", url, "--format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()
    for pipe in (process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()


def test_tail_without_tables_refuses_a_keyless_table_and_the_app_keeps_working(
    base: str, db: Any
) -> None:
    db.execute("CREATE TABLE rc_keyless (a INT, b INT)")
    db.execute("INSERT INTO rc_keyless VALUES (1, 2)")
    result = invoke("tail", base, "--to", "now")
    assert result.exit_code == 2, result.output
    assert "ALTER TABLE public.rc_keyless REPLICA IDENTITY FULL;" in result.stderr
    assert "Traceback" not in result.output
    assert left(db) == ([], [])  # was a lasting FOR ALL TABLES publication and a slot
    db.execute("UPDATE rc_keyless SET b = 3")  # was: "does not have a replica identity"


def test_tail_leaves_nothing_after_sigterm_and_only_its_publication_after_sigkill(
    base: str, db: Any
) -> None:
    db.execute("CREATE TABLE rc_t (id INT PRIMARY KEY)")
    for sig in (signal.SIGTERM, signal.SIGKILL):
        process = tail(base)
        try:
            wait_for(lambda: len(left(db)[0]) == 1 and len(left(db)[1]) == 1)
            slots, publications = left(db)
            assert slots[0].startswith("rowcast_tail_")
            process.send_signal(sig)
            process.wait(15)
        finally:
            stop(process)
        if sig == signal.SIGTERM:
            wait_for(lambda: left(db) == ([], []))  # was: slot rowcast and publication rowcast
        else:  # the temporary slot dies with the connection; the publication stays
            wait_for(lambda kept=publications: left(db) == ([], kept))
    result = invoke("uninstall", base)
    assert result.exit_code == 0, result.output
    assert f"would drop publication {publications[0]}" in result.stdout
    assert f'DROP PUBLICATION "{publications[0]}";' in result.stdout or (
        f"DROP PUBLICATION {publications[0]};" in result.stdout
    )
    assert "dry run: nothing dropped" in result.stdout
    assert left(db) == ([], publications)
    result = invoke("uninstall", base, "--yes")
    assert result.exit_code == 0, result.output
    assert left(db) == ([], [])
    assert "nothing of rowcast's" in invoke("uninstall", base).stdout


def test_tail_on_a_stopped_relays_slot_is_refused(base: str, db: Any, tmp_path: Path) -> None:
    db.execute("CREATE TABLE rc_t (id INT PRIMARY KEY)")
    relay = LogicalSource(base, checkpoint=open_checkpoint(str(tmp_path / "rd.pos")))
    relay.setup()  # what a relay made, now stopped
    db.execute("SELECT confirmed_flush_lsn FROM pg_replication_slots")
    before = db.fetchone()
    db.execute("INSERT INTO rc_t VALUES (1)")
    result = invoke("tail", f"{base}?slot={relay.slot}", "--to", "now")
    assert result.exit_code == 2, result.output
    assert "belongs to another reader" in result.stderr
    db.execute("SELECT confirmed_flush_lsn FROM pg_replication_slots")
    assert db.fetchone() == before  # the relay's changes are still there for it


def test_a_second_relay_on_a_slot_is_refused_and_uninstall_keeps_an_active_slot(
    base: str, db: Any, tmp_path: Path
) -> None:
    db.execute("CREATE TABLE rc_t (id INT PRIMARY KEY)")
    url = f"{base}?slot=rowcast_shared"
    first = subprocess.Popen(
        [str(ROWCAST), "relay", url, "--to", "-", "--checkpoint", str(tmp_path / "a.pos")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: _active(db, "rowcast_shared"))
        for checkpoint, why in (  # the same checkpoint twice (its report says it runs), or
            ("a.pos", "is in use: a relay from"),  # another one (the slot is active)
            ("b.pos", "another reader"),
        ):
            result = invoke("relay", url, "--to", "-", "--checkpoint", str(tmp_path / checkpoint))
            assert result.exit_code == 2, result.output
            assert why in result.stderr
        result = invoke("uninstall", base, "--yes")
        assert result.exit_code == 2, result.output
        assert "slot rowcast_shared (pid " in result.stderr
        assert left(db) == (["rowcast_shared"], ["rowcast_shared"])
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(15)
        stop(first)


def _active(db: Any, slot: str) -> bool:
    db.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    row = db.fetchone()
    return bool(row and row[0])


def test_a_relay_whose_slot_was_dropped_names_the_recovery_and_makes_nothing(
    base: str, db: Any, tmp_path: Path
) -> None:
    db.execute("CREATE TABLE rc_t (id INT PRIMARY KEY)")
    pos = str(tmp_path / "gone.pos")
    relay = LogicalSource(base, checkpoint=open_checkpoint(pos))
    relay.setup()  # a relay that ran: its checkpoint holds where its slot was
    db.execute(
        "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = %s", (relay.slot,)
    )
    (confirmed,) = db.fetchone()
    with open_checkpoint(pos) as checkpoint:
        checkpoint.save(str(confirmed))
    db.execute("INSERT INTO rc_t VALUES (1)")
    # an administrator drops the slot (or the server invalidated it), the app writes on
    db.execute("SELECT pg_drop_replication_slot(%s)", (relay.slot,))
    db.execute("INSERT INTO rc_t VALUES (2)")
    result = invoke("relay", base, "--to", "-", "--checkpoint", pos)
    assert result.exit_code == 2, result.output
    said = " ".join(result.stderr.split())
    assert f"slot {relay.slot} does not exist (dropped, or invalidated and removed)" in said
    assert "rowcast backfill URL --tables" in said
    assert relay.slot not in left(db)[0]  # was: made again at once, the changes skipped
