"""The reading pages: Streams, a stream's events, a row's history, Live (and its SSE feed).

Every handler reads through `rowcast.ui.data.StoreView` (limits and keys, never
offsets) in a worker thread, so a slow store never stalls the event loop.
Parameters are checked here: a bad one is a 400 page that says what is wanted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from ..errors import ConfigError
from ..store import ALL, RecordedEvent
from .console import console_of
from .data import MAX_PAGE, pretty, shown_time
from .filters import quoted_path
from .history import is_change, row_history, summary
from .live import LiveFilter

__all__ = ["routes"]

HEARTBEAT = 15.0  #: seconds between two comments on an idle live feed (proxies time out)


def _int(request: Request, name: str, low: int = 0, high: int | None = None) -> int | None:
    text = request.query_params.get(name)
    if text in (None, ""):
        return None
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {text!r}") from None
    if value < low or (high is not None and value > high):
        raise ConfigError(f"{name} must be between {low} and {high or 'any'}, not {value}")
    return value


def _time(request: Request, name: str) -> float | None:
    """A time given as ISO 8601 (UTC unless it says otherwise), as epoch seconds."""
    text = (request.query_params.get(name) or "").strip()
    if not text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{name} is a time like 2026-01-05T09:30:00 (UTC), not {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


async def home(request: Request) -> Response:
    return RedirectResponse(f"{request.scope.get('root_path', '')}/streams", 303)


async def streams(request: Request) -> Response:
    console = console_of(request)
    view = console.view
    assert view is not None
    prefix = request.query_params.get("prefix", "")
    after = request.query_params.get("after") or None
    items, more = await asyncio.to_thread(view.streams, prefix, after)
    head = await asyncio.to_thread(view.head)
    recent = [] if prefix or after else await asyncio.to_thread(view.recent)
    return console.render(
        request,
        "streams.html",
        prefix=prefix,
        after=after,
        items=items,
        more=more,
        head=head,
        recent=recent,
        nav="streams",
    )


async def stream(request: Request) -> Response:
    console = console_of(request)
    view = console.view
    assert view is not None
    name = request.path_params["name"]
    newest_first = request.query_params.get("order", "newest") != "oldest"
    before, after = _int(request, "before", 1), _int(request, "after", 0)
    limit = _int(request, "limit", 1, MAX_PAGE)
    page = await asyncio.to_thread(
        lambda: view.events(
            name, newest_first=newest_first, before=before, after=after, limit=limit
        )
    )
    row = name != ALL and bool(page.events) and is_change(page.events[0].data)
    return console.render(request, "stream.html", page=page, name=name, row=row, nav="streams")


async def row(request: Request) -> Response:
    console = console_of(request)
    store = console.store
    assert store is not None
    name = request.path_params["name"]
    at = _time(request, "at")
    before = _int(request, "before", 1)
    history = await asyncio.to_thread(lambda: row_history(store, name, at=at, before=before))
    error = None
    if history is not None and console.audit is not None:
        key = (history.as_of.after or history.as_of.before) if history.as_of else None
        newest = history.steps[0] if history.steps else None
        key = key or (newest.after or newest.before if newest else None)
        if key:
            try:
                history.revisions = await asyncio.to_thread(
                    console.audit.revisions, history.schema, history.table, key, at=at
                )
            except ConfigError as exc:
                error = console.scrub(str(exc))
    return console.render(
        request,
        "row.html",
        name=name,
        history=history,
        at_text=request.query_params.get("at", ""),
        audit_error=error,
        nav="streams",
        status_code=200 if history is not None else 404,
    )


async def live(request: Request) -> Response:
    console = console_of(request)
    wanted = _filter(request)
    return console.render(request, "live.html", wanted=wanted, nav="live")


def _filter(request: Request) -> LiveFilter:
    params = request.query_params
    return LiveFilter(
        stream=params.get("stream") or ALL,
        table=params.get("table", "").strip(),
        type=params.get("type", "").strip(),
    )


def _message(event: RecordedEvent, root: str) -> str:
    data = event.data if isinstance(event.data, dict) else {}
    change = is_change(data)
    return json.dumps(
        {
            "position": event.position,
            "stream": event.stream,
            "version": event.version,
            "type": event.type,
            "time": shown_time(event.recorded_at),
            "table": data.get("table") if change else None,
            "action": data.get("action") if change else None,
            "summary": summary(event.data) if change else "",
            "data": pretty(event.data),
            "href": f"{root}/{'rows' if change else 'streams'}/{quoted_path(event.stream)}",
        },
        ensure_ascii=False,
    )


async def feed(request: Request) -> Response:
    """Server-Sent Events: the events the filter takes, as they are appended."""
    console = console_of(request)
    live = console.live
    assert live is not None
    wanted = _filter(request)
    last_id = request.headers.get("last-event-id")
    after = int(last_id) if last_id and last_id.isdigit() else None
    recent = _int(request, "recent", 0, 200)
    root = request.scope.get("root_path", "")

    async def stream() -> AsyncIterator[str]:
        yield "retry: 1000\n\n"
        limit = 20 if recent is None else recent
        async for item in live.follow(wanted, after, limit, heartbeat=HEARTBEAT):
            if item is None:
                yield ": still here\n\n"
            elif isinstance(item, str):
                yield f"event: notice\ndata: {json.dumps(console.scrub(item))}\n\n"
            else:
                yield f"id: {item.position}\ndata: {_message(item, root)}\n\n"

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"x-accel-buffering": "no"}
    )


def routes() -> list[Route]:
    return [
        Route("/", home),
        Route("/streams", streams),
        Route("/streams/{name:path}", stream),
        Route("/rows/{name:path}", row),
        Route("/live", live),
        Route("/live/feed", feed),
    ]
