"""A row's page shows its audit revisions from ``<table>_rev`` of the ``--source`` database,
with the columns each changed, and the revision as of a time (SQLite, PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from rowcast import Hub
from rowcast.audit import Versioned
from rowcast.sources.sqlalchemy import SessionCapture
from rowcast.store import EventStore
from rowcast.ui import ConsoleConfig
from tests.conftest import private_schema, require_server

from .conftest import keep, served


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.server)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/app.db", None
        return
    with private_schema("rc_ui") as schema:
        yield require_server("postgresql"), schema


def test_a_rows_page_shows_its_revisions(database: tuple[str, str | None], tmp_path: Path) -> None:
    url, schema = database
    name = f"ui_item_{uuid.uuid4().hex[:6]}"

    class Base(DeclarativeBase):
        pass

    class Item(Versioned, Base):
        __tablename__ = name
        __table_args__ = {"schema": schema}
        id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
        label: Mapped[str] = mapped_column(String(20))
        qty: Mapped[int]

    engine = create_engine(url)
    Base.metadata.create_all(engine)
    events = f"sqlite:///{tmp_path}/events.db"
    hub = Hub()
    with EventStore(events) as store:
        hub.signal("commit").connect(
            lambda _, changes: [keep(store, c) for c in changes], weak=False
        )
        factory = sessionmaker(engine)
        with SessionCapture(factory, hub=hub), factory() as session:
            item = Item(id=1, label="a", qty=1)
            session.add(item)
            session.commit()
            item.qty = 2
            session.commit()
            between = time.time()
            item.label = "b"
            session.commit()
        streams = [info.stream for info in store.list_streams()]
    (stream,) = [s for s in streams if f"{name}-1" in s]
    source = url.replace("postgresql+psycopg://", "postgresql://", 1)
    try:
        with (
            served(ConsoleConfig(store=events, source=source)) as base,
            httpx.Client(base_url=base) as client,
        ):
            page = client.get(f"/rows/{stream}").text
            at = dt.datetime.fromtimestamp(between, dt.UTC).isoformat()
            then = client.get(f"/rows/{stream}", params={"at": at})
    finally:
        Base.metadata.drop_all(engine)
        engine.dispose()
    revisions = page[page.index('id="revisions"') :]
    assert f"{name}_rev" in revisions
    rows = re.findall(r"<tr class=\"[^\"]*\">(.*?)</tr>", revisions, re.S)
    assert len(rows) == 3  # newest first: label, qty, the write
    assert re.findall(r'<td class="changed">([^<]*)</td>', rows[0]) == ["b"]
    assert re.findall(r'<td class="changed">([^<]*)</td>', rows[1]) == ["2"]
    assert re.findall(r'<td class="changed">([^<]*)</td>', rows[2]) == ["1", "a", "1"]
    assert then.status_code == 200
    shown = then.text
    assert re.search(r'<tr class="[^"]*asof', shown[shown.index('id="revisions"') :])
    assert "<th>label</th><td>a</td>" in shown  # the row as of then: before the rename
