"""AuditSink: revision rows for changes from any source, written once."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from rowcast import Change, ConfigError, Hub, SinkError
from rowcast.audit import AuditSink, history
from rowcast.sources.mysql import BinlogSource
from tests.conftest import require_server

from .models import SCHEMA, make_models
from .test_session import STEVE, revisions

TS = 1_700_000_000.0


def row(id: int, party: int, name: str = "Steve") -> dict[str, Any]:
    return {"id": id, "name": name, "date": STEVE["date"], "time": STEVE["time"], "party": party}


def schema_of(models: SimpleNamespace) -> str:
    """The schema a log source names for the test tables."""
    return models.Reservation.__table__.schema or "main"


def tx(
    models: SimpleNamespace,
    n: int,
    *changes: tuple[str, str, Any, Any, Any],
    source: str = "mysql",
    ts: float | None = None,
) -> list[Change]:
    """Transaction `n` of (action, table, pk, before, after) changes, at `ts` (or TS + n)."""
    return [
        Change(
            action,
            schema_of(models),
            table,
            pk,
            before,
            after,
            TS + n if ts is None else ts,
            f"tx-{n}",
            f"bin.1:{n}",
            source,
        )
        for action, table, pk, before, after in changes
    ]


def rev_row(party: int | None, deleted: bool = False, id: int = 1) -> dict[str, Any]:
    """The after image of a reservations_rev insert, as a log source shows it."""
    values = row(id, party) if not deleted else {**dict.fromkeys(row(id, 0)), "id": id}
    return {"rev_id": "x", "rev_created": 1.0, "rev_isdelete": deleted, "rev_txid": "t", **values}


def test_writes_updates_and_deletes_become_revisions(
    engine: Engine, factory: sessionmaker[Session], models: SimpleNamespace
) -> None:
    sink = AuditSink(engine)
    sink.write(tx(models, 1, ("write", "reservations", 1, None, row(1, 6))))
    sink.write(tx(models, 2, ("update", "reservations", 1, row(1, 6), row(1, 4))))
    sink.write(tx(models, 3, ("delete", "reservations", 1, row(1, 4), None)))
    assert sink.written == 3
    with factory() as session:
        assert revisions(session, models.Reservation, "id", "name", "party") == [
            (False, 1, "Steve", 6),
            (False, 1, "Steve", 4),
            (True, 1, None, None),
        ]
        revs = history(session, models.Reservation, 1)
    assert [r.rev_txid for r in revs] == ["tx-1", "tx-2", "tx-3"]
    assert [r.rev_created for r in revs] == [TS + 1, TS + 2, TS + 3]


def test_a_changed_primary_key_ends_the_old_key_history(
    engine: Engine, factory: sessionmaker[Session], models: SimpleNamespace
) -> None:
    sink = AuditSink(engine)
    sink.write(tx(models, 1, ("write", "reservations", 1, None, row(1, 6))))
    moved = tx(models, 2, ("update", "reservations", 2, row(1, 6), row(2, 6)))
    assert sink.write(moved) == 2
    assert sink.write(moved) == 0  # re-delivered: both rows were stored already
    with factory() as session:
        assert [(r.rev_isdelete, r.party) for r in history(session, models.Reservation, 1)] == [
            (False, 6),
            (True, None),
        ]
        assert [(r.rev_isdelete, r.party) for r in history(session, models.Reservation, 2)] == [
            (False, 6)
        ]
    # the ORM's own revisions of such a move (a delete and a write) vouch for it
    orm_moved = tx(
        models,
        3,
        ("update", "reservations", 3, row(2, 6), row(3, 6)),
        ("write", "reservations_rev", "x", None, rev_row(None, deleted=True, id=2)),
        ("write", "reservations_rev", "y", None, rev_row(6, id=3)),
    )
    assert sink.write(orm_moved) == 0


def test_changes_at_the_same_second_keep_their_order(
    engine: Engine, factory: sessionmaker[Session], models: SimpleNamespace
) -> None:
    sink = AuditSink(engine)
    changes = tx(
        models, 1, *[("update", "reservations", 1, row(1, p - 1), row(1, p)) for p in (2, 3)]
    )
    sink.write(changes)
    sink.write(tx(models, 2, ("update", "reservations", 1, row(1, 3), row(1, 4)), ts=TS + 1))
    with factory() as session:
        assert [r.party for r in history(session, models.Reservation, 1)] == [2, 3, 4]


def test_changes_the_orm_audited_are_not_written_twice(
    engine: Engine, factory: sessionmaker[Session], models: SimpleNamespace
) -> None:
    sink = AuditSink(engine)
    written = sink.write(
        tx(
            models,
            1,
            ("write", "reservations", 1, None, row(1, 6)),
            ("write", "reservations_rev", "x", None, rev_row(6)),  # the ORM's revision of it
            ("update", "reservations", 1, row(1, 6), row(1, 5)),  # raw SQL in the same transaction
            ("delete", "reservations", 2, row(2, 1), None),
            ("write", "reservations_rev", "y", None, rev_row(None, deleted=True, id=2)),
        )
    )
    assert written == 1
    assert sink.skipped == 2
    with factory() as session:
        assert revisions(session, models.Reservation, "id", "party") == [(False, 1, 5)]


def test_changes_from_the_session_capture_are_skipped(
    engine: Engine, factory: sessionmaker[Session], models: SimpleNamespace
) -> None:
    sink = AuditSink(engine)
    changes = tx(models, 1, ("write", "reservations", 1, None, row(1, 6)), source="sqlalchemy")
    assert sink.write(changes) == 0
    with factory() as session:
        assert history(session, models.Reservation, 1) == []


def test_redelivery_is_idempotent(
    engine: Engine, factory: sessionmaker[Session], models: SimpleNamespace
) -> None:
    sink = AuditSink(engine)
    batch = [
        tx(models, 1, ("write", "reservations", 1, None, row(1, 6))),
        tx(models, 2, ("update", "reservations", 1, row(1, 6), row(1, 4))),
    ]
    sink.deliver(batch)
    sink.deliver(batch)  # a relay retrying after a lost acknowledgement
    assert sink.written == 2
    with factory() as session:
        assert [r.party for r in history(session, models.Reservation, 1)] == [6, 4]


def test_only_versioned_tables_are_audited(
    engine: Engine, factory: sessionmaker[Session], models: SimpleNamespace
) -> None:
    sink = AuditSink(engine, models=[models.Pair])
    changes = tx(
        models,
        1,
        ("write", "reservations", 1, None, row(1, 6)),  # versioned, but not asked for
        ("write", "audit_plain", 1, None, {"id": 1, "data": "a", "count": 0}),  # not versioned
        ("write", "audit_pair_rev", "x", None, {"rev_id": "x", "a": 9, "b": "z", "value": 1}),
        ("write", "audit_pair", (1, "x"), None, {"a": 1, "b": "x", "value": 2}),
    )
    changes.append(Change("write", "elsewhere", "audit_pair", (2, "y"), None, {"a": 2}, TS))
    assert sink.write(changes) == 1
    with factory() as session:
        assert [r.value for r in history(session, models.Pair, (1, "x"))] == [2]
        assert history(session, models.Reservation, 1) == []
    with pytest.raises(TypeError, match="not a versioned model"):
        AuditSink(engine, models=[models.Plain])


def test_as_a_hub_subscriber(
    engine: Engine, factory: sessionmaker[Session], models: SimpleNamespace
) -> None:
    hub = Hub()
    sink = AuditSink(engine).connect(hub)
    hub.publish(tx(models, 1, ("write", "reservations", 1, None, row(1, 6))))
    sink.close()
    hub.publish(tx(models, 2, ("update", "reservations", 1, row(1, 6), row(1, 4))))
    with factory() as session:
        assert [r.party for r in history(session, models.Reservation, 1)] == [6]


def test_bad_urls_and_unreachable_databases() -> None:
    make_models(None)  # a versioned "reservations" in the default schema
    with pytest.raises(ConfigError, match="engine or database URL"):
        AuditSink("not a url")
    with pytest.raises(ConfigError, match="engine or database URL"):
        AuditSink("nosuchdb://u:secret@host/db")
    with pytest.raises(ConfigError, match="Engine or a URL"):
        AuditSink(42)  # type: ignore[arg-type]
    down = create_engine("postgresql+psycopg://audit:secret@127.0.0.1:1/none")
    sink = AuditSink(down)
    assert "secret" not in sink.url
    change = Change("write", "public", "reservations", 1, None, row(1, 6), TS, "t", "p", "postgres")
    with pytest.raises(SinkError, match="cannot reach") as caught:
        sink.write([change])
    assert "secret" not in str(caught.value)
    hub = Hub()
    sink.connect(hub)
    hub.publish([change])  # a receiver's failure is the hub's to log and count
    assert hub.errors == 1
    down.dispose()


# ---------------------------------------------------------------- the MariaDB binlog


@pytest.fixture
def maria() -> Iterator[tuple[Engine, SimpleNamespace]]:
    engine = create_engine(require_server("mysql"))
    with engine.begin() as conn:
        conn.execute(text(f"CREATE DATABASE IF NOT EXISTS {SCHEMA}"))
    models = make_models(SCHEMA)
    models.Base.metadata.drop_all(engine)
    models.Base.metadata.create_all(engine)
    yield engine, models
    models.Base.metadata.drop_all(engine)
    engine.dispose()


def binlog_position(engine: Engine) -> str:
    with engine.connect() as conn:
        file, offset = conn.exec_driver_sql("SHOW MASTER STATUS").one()[:2]
    return f"{file}:{offset}"


def test_raw_sql_on_mariadb_is_audited_from_the_binlog_and_orm_writes_once(
    maria: tuple[Engine, SimpleNamespace],
) -> None:
    engine, models = maria
    Reservation = models.Reservation
    start = binlog_position(engine)
    with engine.begin() as conn:  # a console, another service: no ORM
        conn.execute(
            text(
                f"INSERT INTO {SCHEMA}.reservations (name, date, time, party) "
                "VALUES ('Phil', '2015-05-01', '18:30:00', 3)"
            )
        )
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {SCHEMA}.reservations SET party = 2 WHERE id = 1"))
    with Session(engine) as session:  # the ORM audits in-transaction; the binlog sees both
        session.add(Reservation(id=2, **STEVE, party=6))
        session.commit()
        steve = session.get(Reservation, 2)
        assert steve is not None
        steve.party = 4
        session.execute(text(f"DELETE FROM {SCHEMA}.reservations WHERE id = 1"))  # raw, same tx
        session.commit()
    hub = Hub()
    sink = AuditSink(engine).connect(hub)
    BinlogSource(
        f"mysql://root@127.0.0.1:3306/{SCHEMA}", start=start, end="now", tables=[f"{SCHEMA}.*"]
    ).run(hub)
    assert hub.errors == 0
    assert sink.written == 3
    assert sink.skipped == 2
    with Session(engine) as session:
        phil = history(session, Reservation, 1)
        assert [(r.rev_isdelete, r.name, r.time, r.party) for r in phil] == [
            (False, "Phil", dt.time(18, 30), 3),
            (False, "Phil", dt.time(18, 30), 2),
            (True, None, None, None),
        ]
        assert phil[0].rev_txid is not None
        assert phil[0].rev_txid.count("-") == 2  # the MariaDB GTID
        assert [r.party for r in history(session, Reservation, 2)] == [6, 4]
