"""Hub: every signal level, filters, ordering, strong references and error isolation."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import pytest

from rowcast import Change, ConfigError, Hub


def change(action: str, table: str = "test", pk: Any = 1, schema: str | None = "db") -> Change:
    image = {"id": pk}
    return Change(action, schema, table, pk, before=image, after=image)  # type: ignore[arg-type]


TX = [
    change("write", pk=1),
    change("update", pk=1),
    change("write", table="other", pk=2),
    change("delete", schema="db2", pk=3),
]


def collect(hub: Hub, name: str, sender: Any = None) -> list[Any]:
    got: list[Any] = []

    def receiver(sender: Any, **kw: Any) -> None:
        got.append((sender, kw.get("change") or kw.get("changes")))

    if sender is None:
        hub.signal(name).connect(receiver, weak=False)
    else:
        hub.signal(name).connect(receiver, sender=sender, weak=False)
    return got


def test_every_signal_level_is_sent_in_order() -> None:
    hub = Hub()
    action = collect(hub, "write")
    schema = collect(hub, "write@db")
    table = collect(hub, "write@db.test")
    meepo = collect(hub, "test_write")
    commit = collect(hub, "commit")
    hub.publish(TX)
    assert [c for _, c in action] == [TX[0], TX[2]]
    assert [c for _, c in schema] == [TX[0], TX[2]]
    assert table == [(1, TX[0])]
    assert meepo == [(1, TX[0])]
    assert commit == [(hub, TX)]


def test_meepo_level_can_filter_by_pk_sender() -> None:
    hub = Hub()
    only_3 = collect(hub, "test_delete", sender=3)
    only_9 = collect(hub, "test_delete", sender=9)
    hub.publish(TX)
    assert only_3 == [(3, TX[3])]
    assert only_9 == []


def test_change_without_schema_is_not_sent_on_a_schema_level_name() -> None:
    # "write@t" is schema t's signal: a schema-less change of table t is not sent there
    hub = Hub()
    schema_t = collect(hub, "write@t")
    meepo = collect(hub, "t_write")
    by_table: list[Change] = []
    hub.connect(by_table.append, table="t")
    item = change("write", table="t", schema=None)
    of_schema_t = change("write", table="x", schema="t")
    hub.publish([item, of_schema_t])
    assert schema_t == [(1, of_schema_t)]
    assert meepo == [(1, item)]
    assert by_table == [item]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, [0, 1, 2, 3]),
        ({"action": "write"}, [0, 2]),
        ({"schema": "db"}, [0, 1, 2]),
        ({"table": "test"}, [0, 1, 3]),
        ({"schema": "db", "table": "test"}, [0, 1]),
        ({"table": "db2.test"}, [3]),
        ({"action": "update", "table": "db.test"}, [1]),
        ({"action": "delete", "schema": "db"}, []),
    ],
)
def test_connect_filters(filters: dict[str, str], expected: list[int]) -> None:
    hub = Hub()
    got: list[Change] = []
    hub.connect(got.append, **filters)  # type: ignore[arg-type]
    hub.publish(TX)
    assert got == [TX[i] for i in expected]


def test_decorator_and_disconnect() -> None:
    hub = Hub()
    got: list[Change] = []

    @hub.on(action="write")
    def on_write(c: Change) -> None:
        got.append(c)

    hub.publish(TX)
    hub.disconnect(on_write)
    hub.publish(TX)
    assert got == [TX[0], TX[2]]


def test_receivers_are_held_strongly() -> None:
    hub = Hub()
    got: list[Change] = []
    hub.connect(lambda c: got.append(c))
    gc.collect()
    hub.publish(TX[:1])
    assert got == TX[:1]


def test_a_failing_receiver_is_isolated_logged_counted_and_routed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    routed: list[tuple[BaseException, Change | None, Any]] = []
    hub = Hub(on_error=lambda e, c, r: routed.append((e, c, r)))
    got: list[Change] = []

    def broken(c: Change) -> None:
        raise RuntimeError("boom")

    hub.connect(broken)
    hub.connect(got.append)
    hub.signal("commit").connect(lambda sender, changes: 1 / 0, weak=False)
    with caplog.at_level(logging.ERROR, logger="rowcast.hub"):
        hub.publish(TX)
    assert got == TX  # the healthy receiver saw everything, in order
    assert hub.errors == 5
    assert [type(e) for e, _, _ in routed] == [RuntimeError] * 4 + [ZeroDivisionError]
    assert routed[0][1] is TX[0]
    assert routed[0][2] is broken
    assert routed[4][1] is None
    assert "failed on write@db.test" in caplog.text


def test_a_failing_on_error_handler_is_logged_too(caplog: pytest.LogCaptureFixture) -> None:
    def bad_handler(error: BaseException, change: Change | None, receiver: Any) -> None:
        raise ValueError("handler broke")

    hub = Hub(on_error=bad_handler)
    hub.connect(lambda c: 1 / 0)
    with caplog.at_level(logging.ERROR, logger="rowcast.hub"):
        hub.publish(TX[:1])
    assert hub.errors == 1
    assert "Hub.on_error handler failed" in caplog.text


def test_bad_arguments_are_refused() -> None:
    hub = Hub()
    with pytest.raises(TypeError, match="needs a callable"):
        hub.connect("not callable")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="already names a schema"):
        hub.connect(print, schema="a", table="b.c")
    with pytest.raises(ConfigError, match="'insert' is not a valid Action: use one of write"):
        hub.connect(print, action="insert")


def test_a_muted_signal_sends_nothing() -> None:
    hub = Hub()
    got: list[Change] = []
    hub.connect(got.append, action="write")
    commits = collect(hub, "commit")
    with hub.signal("write").muted(), hub.signal("commit").muted():
        hub.publish(TX)
    assert got == []
    assert commits == []
    hub.publish(TX)
    assert got == [TX[0], TX[2]]
    assert len(commits) == 1


def test_async_receivers_are_awaited_by_publish_async() -> None:
    hub = Hub()
    order: list[str] = []

    async def slow(change: Change) -> None:
        await asyncio.sleep(0.01)
        order.append(f"async {change.pk}")

    hub.connect(slow, action="write")
    hub.connect(lambda c: order.append(f"sync {c.pk}"), action="write")
    asyncio.run(hub.publish_async(TX))
    assert order == ["async 1", "sync 1", "async 2", "sync 2"]
    assert hub.errors == 0


def test_publish_counts_an_async_receiver_as_failed_and_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures: list[BaseException] = []
    hub = Hub(on_error=lambda error, change, fn: failures.append(error))
    got: list[Change] = []

    async def receiver(change: Change) -> None:  # never awaited by publish
        got.append(change)

    hub.connect(receiver, action="delete")
    hub.connect(got.append, action="delete")
    with caplog.at_level(logging.ERROR, logger="rowcast.hub"):
        hub.publish(TX)  # no "coroutine was never awaited" warning (warnings are errors)
    assert got == [TX[3]]
    assert hub.errors == 1
    assert isinstance(failures[0], ConfigError)
    assert "await hub.publish_async" in str(failures[0])


def test_empty_transaction_sends_nothing() -> None:
    hub = Hub()
    commit = collect(hub, "commit")
    hub.publish([])
    assert commit == []


def test_receivers_connected_after_a_publish_get_the_next_one() -> None:
    hub = Hub()
    hub.publish(TX)  # the hub remembers which signals each table's changes go to
    got: list[Change] = []
    hub.connect(got.append, table="db.test", action="write")
    meepo = collect(hub, "test_write")
    hub.publish(TX)
    assert got == [TX[0]]
    assert meepo == [(1, TX[0])]


def test_a_transaction_published_by_a_receiver_waits_for_the_current_one() -> None:
    hub = Hub()
    seen: list[str] = []
    inner = [change("write", table="log", pk=9)]

    @hub.on(table="db.test", action="write")
    def log_it(c: Change) -> None:
        seen.append(c.name)
        hub.publish(inner)  # e.g. the receiver commits another captured session

    hub.connect(lambda c: seen.append(c.name), table="db.other")
    hub.connect(lambda c: seen.append(c.name), table="db.log")
    hub.signal("commit").connect(lambda s, changes: seen.append("commit"), weak=False)
    hub.publish(TX[:3])
    assert seen == ["test_write", "other_write", "commit", "log_write", "commit"]


def test_a_raw_receiver_joining_a_signal_the_hub_already_sent_on_is_reached_by_sender() -> None:
    # the hub calls its own receivers without blinker's look-up of the sender; a receiver
    # connected to the signal itself, for one pk or any, after a publish, still counts
    hub = Hub()
    got: list[Change] = []
    hub.connect(got.append, table="db.test")
    hub.publish(TX)
    only_1 = collect(hub, "write@db.test", sender=1)
    only_7 = collect(hub, "write@db.test", sender=7)
    every = collect(hub, "update@db.test")
    hub.publish(TX)
    assert got == [TX[0], TX[1], TX[0], TX[1]]
    assert only_1 == [(1, TX[0])]
    assert only_7 == []
    assert every == [(1, TX[1])]


def test_a_weak_raw_receiver_that_is_collected_is_not_called_and_the_hub_goes_on() -> None:
    hub = Hub()
    got: list[Change] = []
    hub.connect(got.append, action="write")
    calls: list[Any] = []

    def weak(sender: Any, **kw: Any) -> None:
        calls.append(sender)

    hub.signal("write").connect(weak)  # weak: blinker drops it once it is collected
    hub.publish(TX[:1])
    del weak
    gc.collect()
    hub.publish(TX[:1])
    assert calls == [1]
    assert got == [TX[0], TX[0]]


def test_a_receiver_disconnected_after_publishing_is_not_called_again() -> None:
    hub = Hub()
    first: list[Change] = []
    second: list[Change] = []
    hub.connect(first.append, action="write")
    hub.connect(second.append, action="write")
    hub.publish(TX[:1])
    hub.disconnect(first.append)
    hub.publish(TX[:1])
    hub.connect(first.append, action="write")
    hub.publish(TX[:1])
    assert (first, second) == ([TX[0], TX[0]], [TX[0]] * 3)


def test_a_receiver_disconnected_by_an_earlier_one_in_the_same_publish_is_not_called() -> None:
    hub = Hub()
    calls: list[str] = []

    def first(c: Change) -> None:
        calls.append("first")
        hub.disconnect(second)

    def second(c: Change) -> None:
        calls.append("second")

    hub.connect(first, action="write")
    hub.connect(second, action="write")
    hub.publish(TX[:1])
    assert calls == ["first"]


def test_a_hub_receiver_disconnected_or_connected_through_blinker_itself_is_honoured() -> None:
    hub = Hub()
    got: list[Change] = []
    hub.connect(got.append, action="write")
    hub.publish(TX[:1])
    sig = hub.signal("write@db")
    (wrapper,) = hub.signal("write").receivers.values()
    sig.connect(wrapper, weak=False)  # by hand, onto another signal: called there too
    hub.publish(TX[:1])
    hub.signal("write").disconnect(wrapper)  # by hand: no longer called on "write"
    hub.publish(TX[:1])
    assert got == [TX[0], TX[0], TX[0], TX[0]]
