"""The Kafka sink's messages: topic, key, value and headers of each change.

Private to `rowcast.sinks.kafka`, whose docstring describes the layout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..change import Action, Change
from ..codec import dumps
from .base import Encoded

__all__ = ["Message", "debezium_messages", "rowcast_messages"]

Message = tuple[str, bytes | str | None, bytes | str | None, list[tuple[str, str]]]
"""(topic, key, value, headers) of one message to produce."""

Route = Callable[[str | None, str], str]


def rowcast_messages(entries: Sequence[Encoded], route: Route, *, one_topic: bool) -> list[Message]:
    """``format=rowcast``: the value ``Change.to_json()``, the key the primary key's JSON
    (with `one_topic`, ``{"schema": ..., "table": ..., "pk": ...}``)."""
    messages: list[Message] = []
    append = messages.append
    heads: dict[tuple[str | None, str], str] = {}  # one topic: each table's key up to the pk
    for change_id, change, body in entries:
        pk = change.pk
        if one_topic:
            where = (change.schema, change.table)
            head = heads.get(where)
            if head is None:
                head = heads[where] = dumps({"schema": where[0], "table": where[1]})[:-1]
            if type(pk) is int:
                key = f'{head},"pk":{pk}}}'
            else:
                key = f'{head},"pk":{dumps(list(pk) if type(pk) is tuple else pk)}}}'
        elif type(pk) is int:
            key = str(pk)
        else:
            key = dumps(list(pk) if type(pk) is tuple else pk)
        headers = [("rowcast-id", change_id), ("rowcast-position", change.position or "")]
        append((route(change.schema, change.table), key, body, headers))
    return messages


def debezium_messages(
    entries: Sequence[Encoded],
    events: Sequence[tuple[Change, str, str]],
    route: Route,
    tombstones: bool,
) -> list[Message]:
    """``format=debezium``: Debezium's key and value (`rowcast.debezium.DebeziumFormat`),
    each delete followed by a tombstone when `tombstones`."""
    messages: list[Message] = []
    append = messages.append
    for (change_id, change, _), (_, key, value) in zip(entries, events, strict=True):
        topic = route(change.schema, change.table)
        headers = [("rowcast-id", change_id), ("rowcast-position", change.position or "")]
        append((topic, key, value, headers))
        if tombstones and change.action is Action.DELETE:
            append((topic, key, None, headers))  # lets log compaction drop the row
    return messages
