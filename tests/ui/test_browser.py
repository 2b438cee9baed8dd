"""The console in real headless Chromium (Debian's ``chromium``, driven by Playwright).

One console per module, locked with a token; screenshots of each page go to
``build/screenshots/`` (or ``$ROWCAST_SCREENSHOTS``) for review, never committed.
Skipped where ``/usr/bin/chromium`` or Playwright is missing, failed in CI.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rowcast import Change
from rowcast.sinks.deadletter import reason
from rowcast.sinks.store import StoreSink
from rowcast.store import EventStore, NewEvent
from rowcast.ui import ConsoleConfig
from tests.conftest import IN_CI

from .conftest import keep, product_changes, served

CHROMIUM = "/usr/bin/chromium"
DLQ = importlib.util.find_spec("rowcast.dlq") is not None  # rowcast dlq (issue 21)
TOKEN = "a-browser-test-token"
SHOTS = Path(os.environ.get("ROWCAST_SCREENSHOTS", Path(__file__).parents[2] / "build/screenshots"))


def _playwright() -> Any:
    why = None
    if not Path(CHROMIUM).exists():
        why = f"no {CHROMIUM}: apt-get install chromium (scripts/services.sh does)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        why = why or f"no playwright: pip install -e '.[dev]' ({error})"
    if why:
        if IN_CI:
            pytest.fail(why + " (CI=true: the browser tests must run)")
        pytest.skip(why)
    return sync_playwright


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    here = tmp_path_factory.mktemp("console")
    urls = {name: f"sqlite:///{here}/{name}.db" for name in ("events", "dead", "replayed")}
    with EventStore(urls["events"]) as store:
        for pk in (1, 2, 3):
            for change in product_changes(pk)[: 3 if pk != 3 else 4]:
                keep(store, change)
        store.append("shop.orders-7", [NewEvent("orders_write", {"table": "orders", "n": 7})])
    refused = Change(
        "update",
        "shop",
        "product",
        2,
        {"id": 2, "stock": 1},
        {"id": 2, "stock": 0},
        1_767_600_000.0,
        "tx-9",
        "pos-9",
        "postgres",
    )
    sink = StoreSink(urls["dead"])
    sink.dead_letter([[refused]], reason("redis://cache:6379", ValueError("no room")))
    sink.close()
    EventStore(urls["replayed"]).close()
    return urls


@pytest.fixture(scope="module")
def console(stores: dict[str, str]) -> Iterator[str]:
    config = ConsoleConfig(
        store=stores["events"],
        token=TOKEN,
        dead_letters=[stores["dead"]],
        replay_to=stores["replayed"],
    )
    with served(config) as base:
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_playwright = _playwright()
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def page(browser: Any, console: str) -> Iterator[Any]:
    context = browser.new_context(base_url=console, viewport={"width": 1200, "height": 760})
    tab = context.new_page()
    tab.goto("/streams")
    assert "/login" in tab.url  # locked: the token first
    tab.fill("input[name=token]", TOKEN)
    tab.click("button[type=submit]")
    tab.wait_for_url("**/streams")
    yield tab
    context.close()


def _shot(tab: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_each_page_opens(page: Any) -> None:
    from playwright.sync_api import expect

    for name, path, text in [
        ("streams", "/streams", "shop.product-1"),
        ("stream", "/streams/shop.product-1", "product_update"),
        ("all", "/streams/%40all", "All events, in order"),
        ("row", "/rows/shop.product-1", "Changes, newest first"),
        ("live", "/live", "Live"),
        ("pipelines", "/pipelines", "Pipelines"),
        ("dead-letters", "/dead-letters", "no room" if DLQ else "Dead letters"),
    ]:
        page.goto(path)
        expect(page.locator("main")).to_contain_text(text)
        _shot(page, name)


def test_searching_streams_by_prefix(page: Any) -> None:
    from playwright.sync_api import expect

    page.goto("/streams")
    page.fill("#prefix", "shop.orders")
    expect(page.locator("#listing a.stream")).to_have_count(1)
    expect(page.locator("#listing a.stream")).to_have_text("shop.orders-7")
    assert "prefix=shop.orders" in page.url  # the search is in the address
    page.fill("#prefix", "nothing.here")
    expect(page.locator("#no-streams")).to_be_visible()


def test_an_event_appended_shows_in_live_within_a_second(page: Any, stores: dict[str, str]) -> None:
    from playwright.sync_api import expect

    page.goto("/live?table=product")
    expect(page.locator("#live-status")).to_have_text("live")
    with EventStore(stores["events"]) as store:  # another store object: as another process
        keep(store, product_changes(4)[0])
        store.append("shop.orders-8", [NewEvent("orders_write", {"table": "orders"})])
    row = page.locator("#live-rows tr", has_text="shop.product-4")
    expect(row).to_be_visible(timeout=1000)  # the promise: within a second
    expect(page.locator("#live-rows tr", has_text="shop.orders-8")).to_have_count(0)
    page.click("#live-pause")
    with EventStore(stores["events"]) as store:
        keep(store, product_changes(5)[0])
    expect(page.locator("#live-status")).to_contain_text("1 waiting")
    page.click("#live-pause")
    expect(page.locator("#live-rows tr", has_text="shop.product-5")).to_be_visible()
    _shot(page, "live-events")


def test_a_rows_history_highlights_the_changed_column(page: Any) -> None:
    from playwright.sync_api import expect

    page.goto("/streams/shop.product-1")
    page.click("#row-history")
    changed = page.locator("#v3 tr.changed")
    expect(changed).to_have_count(1)
    expect(changed).to_have_attribute("data-column", "stock")
    expect(changed.locator(".new")).to_have_text("8")
    expect(page.locator("#v2 tr.changed")).to_have_attribute("data-column", "price_cents")
    page.fill("input[name=at]", "2026-01-05T08:01:30")
    page.click("form.asof button")
    expect(page.locator("#state")).to_contain_text("135")
    expect(page.locator("#state tr.changed th")).to_have_text("price_cents")
    _shot(page, "row-as-of")


def test_a_write_without_the_token_is_refused(browser: Any, console: str) -> None:
    context = browser.new_context(base_url=console)
    stranger = context.new_page()
    stranger.goto("/dead-letters/0/replay")
    assert "/login" in stranger.url
    answer = stranger.request.post("/dead-letters/0/replay", form={"confirm": "yes"})
    assert answer.status == 401
    context.close()


def test_replaying_a_dead_letter(page: Any, stores: dict[str, str]) -> None:
    from playwright.sync_api import expect

    pytest.importorskip("rowcast.dlq", reason="rowcast dlq (issue 21) is not in this rowcast")
    page.goto("/dead-letters")
    expect(page.locator("#place-0")).to_contain_text("no room")
    page.click("#place-0 a:has-text('inspect')")
    expect(page.locator("pre.json")).to_contain_text('"txid": "tx-9"')
    _shot(page, "dead-letter")
    page.goto("/dead-letters")
    page.click("#replay-0")
    expect(page.locator("main")).to_contain_text(stores["replayed"])
    _shot(page, "confirm-replay")
    page.click("#confirm")
    expect(page.locator("#done")).to_have_text("Replayed 1 dead letter.")
    with EventStore(stores["replayed"]) as replayed:
        (event,) = replayed.read("shop.product-2")
    assert event.data["after"] == {"id": 2, "stock": 0}
