"""The console's reading layer on real stores: keyset pages, a row's history, live filters."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rowcast.store import ALL, EventStore, NewEvent
from rowcast.testing.store import events
from rowcast.ui.data import StoreView, pretty, shown_time
from rowcast.ui.history import row_history
from rowcast.ui.live import LiveFilter

from .conftest import keep, product_changes


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/events.db"
    with EventStore(url) as opened:
        yield opened


def _versions(page: object) -> list[int]:
    return [e.version for e in page.events]  # type: ignore[attr-defined]


def test_a_stream_pages_newest_first_and_back(store: EventStore) -> None:
    store.append("s", events(12))
    view = StoreView(store, page=5)
    first = view.events("s")
    assert _versions(first) == [12, 11, 10, 9, 8]
    assert first.previous is None
    assert first.next == {"before": 8}
    second = view.events("s", before=8)
    assert _versions(second) == [7, 6, 5, 4, 3]
    last = view.events("s", before=3)
    assert _versions(last) == [2, 1]
    assert last.next is None
    assert last.previous == {"after": 2}
    assert _versions(view.events("s", after=2)) == [7, 6, 5, 4, 3]


def test_a_stream_pages_oldest_first_and_back(store: EventStore) -> None:
    store.append("s", events(12))
    view = StoreView(store, page=5)
    first = view.events("s", newest_first=False)
    assert _versions(first) == [1, 2, 3, 4, 5]
    assert first.previous is None
    assert first.next == {"after": 5}
    last = view.events("s", newest_first=False, after=10)
    assert _versions(last) == [11, 12]
    assert last.next is None
    assert _versions(view.events("s", newest_first=False, before=11)) == [6, 7, 8, 9, 10]


def test_the_global_order_pages_across_gaps_left_by_deleted_streams(store: EventStore) -> None:
    store.append("kept-1", events(3))
    store.append("gone", events(40))
    store.append("kept-2", events(4))
    store.delete_stream("gone")
    view = StoreView(store, page=5)
    newest = view.events(ALL)
    assert [e.stream for e in newest.events] == ["kept-2"] * 4 + ["kept-1"]
    assert newest.next is not None
    older = view.events(ALL, **newest.next)
    assert [(e.stream, e.version) for e in older.events] == [("kept-1", 2), ("kept-1", 1)]
    assert older.next is None
    oldest = view.events(ALL, newest_first=False, limit=2)
    assert [e.version for e in oldest.events] == [1, 2]
    assert oldest.previous is None


def test_streams_pages_by_prefix_and_says_where_the_next_page_starts(store: EventStore) -> None:
    for n in range(7):
        store.append(f"shop.orders-{n}", events(1))
    store.append("shop.product-1", events(2))
    view = StoreView(store, page=3)
    items, more = view.streams("shop.orders-")
    assert [i.stream for i in items] == ["shop.orders-0", "shop.orders-1", "shop.orders-2"]
    assert more == "shop.orders-2"
    items, more = view.streams("shop.orders-", after="shop.orders-5")
    assert [i.stream for i in items] == ["shop.orders-6"]
    assert more is None
    assert view.head() == 9
    assert [e.stream for e in view.recent(2)] == ["shop.product-1", "shop.orders-6"]


def test_a_rows_history_shows_what_each_change_changed_and_the_row_as_of_a_time(
    store: EventStore,
) -> None:
    changes = product_changes()
    for change in changes:
        keep(store, change)
    stream = "shop.product-1"
    history = row_history(store, stream)
    assert history is not None
    assert (history.schema, history.table, history.pk, history.version) == ("shop", "product", 1, 4)
    assert [s.action for s in history.steps] == ["delete", "update", "update", "write"]
    assert history.steps[1].changed == ["stock"]
    assert history.steps[2].changed == ["price_cents"]
    assert history.state is None  # deleted now
    at = row_history(store, stream, at=changes[1].ts + 30)
    assert at is not None
    assert at.as_of is not None
    assert at.as_of.event.version == 2
    assert at.state == {"id": 1, "name": "pen", "price_cents": 135, "stock": 10}
    before = row_history(store, stream, at=changes[0].ts - 1)
    assert before is not None
    assert before.as_of is None
    page = row_history(store, stream, limit=2)
    assert page is not None
    assert [s.event.version for s in page.steps] == [4, 3]
    assert page.more == 3
    store.append("plain", [NewEvent("happened", {"n": 1})])
    assert row_history(store, "plain") is None
    assert row_history(store, "nothing") is None


def test_the_live_filter_takes_a_stream_a_table_and_a_type(store: EventStore) -> None:
    for change in product_changes():
        keep(store, change)
    store.append("other", [NewEvent("product_note", {"table": "note"})])
    every = list(store.read_all())
    assert len([e for e in every if LiveFilter().takes(e)]) == 5
    assert len([e for e in every if LiveFilter(table="product").takes(e)]) == 4
    assert len([e for e in every if LiveFilter(table="shop.product").takes(e)]) == 4
    assert len([e for e in every if LiveFilter(type="UPDATE").takes(e)]) == 2
    assert [e.stream for e in every if LiveFilter(stream="other").takes(e)] == ["other"]


def test_values_json_lacks_are_shown_as_text() -> None:
    import datetime as dt
    from decimal import Decimal

    shown = pretty({"d": Decimal("1.50"), "at": dt.date(2026, 1, 5), "b": b"\x01"})
    assert '"1.50"' in shown
    assert '"2026-01-05"' in shown
    assert '"0x01"' in shown
    assert shown_time(0) == "1970-01-01 00:00:00.000Z"


def test_live_catches_up_after_a_reconnect_and_bounds_what_it_holds(store: EventStore) -> None:
    import asyncio

    from rowcast.ui.live import Broadcaster, Listener

    store.append("s", events(5))

    async def body() -> list[int]:
        live = Broadcaster(store)
        live.start(asyncio.get_running_loop())
        try:
            follow = live.follow(LiveFilter(), last_id=2, heartbeat=0.05)
            got = [(await anext(follow)).position for _ in range(3)]  # type: ignore[union-attr]
            await asyncio.to_thread(store.append, "s", events(1))
            while (item := await anext(follow)) is None:
                pass
            got.append(item.position)  # type: ignore[union-attr]
            await follow.aclose()
            return got
        finally:
            await asyncio.to_thread(live.stop)

    assert asyncio.run(body()) == [3, 4, 5, 6]

    async def bounded() -> tuple[int, int]:
        listener = Listener(LiveFilter(), size=3)
        for event in store.read("s"):
            listener.offer(event)
        return listener.queue.qsize(), listener.dropped

    assert asyncio.run(bounded()) == (3, 3)
