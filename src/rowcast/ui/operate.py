"""The operating pages: Pipelines, Dead letters (list, inspect, replay, drop), login.

Writes (replay, drop) are POSTs that need the token's session and the CSRF token
of the form; each is asked for on a confirmation page first, which says what will
happen and where the dead letters go.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..errors import ConfigError
from .console import Console, console_of
from .deadletters import DeadLetterPlaces
from .pipelines import chart
from .security import COOKIE

__all__ = ["routes"]

ACTIONS = {"replay": "Replay", "drop": "Drop"}


async def pipelines(request: Request) -> Response:
    console = console_of(request)
    sampler = console.sampler
    entries, error, read_at = sampler.snapshot()
    now = time.time()
    rows = [
        {
            "entry": entry,
            "lag": chart(sampler.history(entry), 1, now),
            "rate": chart(sampler.history(entry), 2, now),
        }
        for entry in entries
    ]
    return console.render(
        request,
        "pipelines.html",
        rows=rows,
        error=error,
        read_at=read_at,
        stores=sampler.shown_urls,
        refresh=max(1, round(sampler.interval)),
        nav="pipelines",
    )


def _places(console: Console) -> DeadLetterPlaces:
    return DeadLetterPlaces(console.config.dead_letters, console.config.replay_to)


def _index(request: Request) -> int:
    try:
        return int(request.path_params["index"])
    except ValueError:
        raise ConfigError("a dead-letter place is named by its number") from None


async def dead_letters(request: Request) -> Response:
    console = console_of(request)
    places = _places(console)
    overviews = await asyncio.gather(
        *(asyncio.to_thread(places.overview, i) for i in range(len(places.urls)))
    )
    return console.render(
        request, "deadletters.html", overviews=overviews, done=_done(request), nav="dead"
    )


def _done(request: Request) -> str | None:
    action, count = request.query_params.get("done"), request.query_params.get("count")
    if action in ACTIONS and count and count.isdigit():
        return f"{ACTIONS[action]}ed {count} dead letter{'s' if count != '1' else ''}."
    return None


async def dead_letter(request: Request) -> Response:
    console = console_of(request)
    places = _places(console)
    index, handle = _index(request), request.path_params["handle"]
    letter = await asyncio.to_thread(places.letter, index, handle)
    return console.render(
        request,
        "deadletter.html",
        index=index,
        url=places.shown(index),
        letter=letter,
        nav="dead",
        status_code=200 if letter is not None else 404,
    )


def _refuse_write(console: Console, request: Request) -> Response | None:
    """The page that says why this write may not be done, or None when it may."""
    guard = console.guard
    cookie = request.cookies.get(COOKIE)
    if not guard.authenticated(cookie, request.headers.get("authorization")):
        why = (
            "log in with the console's token to replay or drop dead letters"
            if guard.locked
            else "this console is read-only: start it with --token (or ROWCAST_UI_TOKEN) "
            "to replay or drop dead letters"
        )
        return console.render(request, "error.html", 403, message=why)
    return None


async def confirm(request: Request) -> Response:
    console = console_of(request)
    refused = _refuse_write(console, request)
    if refused is not None:
        return refused
    action = request.path_params["action"]
    if action not in ACTIONS:
        raise ConfigError(f"no action {action!r}: replay or drop")
    places = _places(console)
    index = _index(request)
    overview = await asyncio.to_thread(places.overview, index)
    to = await asyncio.to_thread(places.replays_to, index) if action == "replay" else None
    return console.render(
        request, "confirm.html", action=action, overview=overview, to=to, nav="dead"
    )


async def act(request: Request) -> Response:
    console = console_of(request)
    refused = _refuse_write(console, request)
    if refused is not None:
        return refused
    form = await request.form()
    if not console.guard.csrf_ok(_text(form.get("csrf")), request.cookies.get(COOKIE)):
        return console.render(
            request, "error.html", 403, message="this form is out of date: open it again"
        )
    action = request.path_params["action"]
    if action not in ACTIONS or form.get("confirm") != "yes":
        raise ConfigError("confirm the action on its page first")
    places = _places(console)
    index = _index(request)
    work = places.replay if action == "replay" else places.drop
    count = await asyncio.to_thread(work, index)
    root = request.scope.get("root_path", "")
    return RedirectResponse(f"{root}/dead-letters?done={action}&count={count}", 303)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _next(value: str | None, root: str) -> str:
    """Where to go after logging in: a path of this console only (never another site)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return f"{root}/streams"
    return f"{root}{value}"


async def login(request: Request) -> Response:
    console = console_of(request)
    guard = console.guard
    root = request.scope.get("root_path", "")
    if request.method == "GET":
        target = request.query_params.get("next", "")
        return console.render(request, "login.html", next=target, failed=False, nav="")
    form = await request.form()
    target = _text(form.get("next")) or ""
    if not guard.csrf_ok(_text(form.get("csrf")), request.cookies.get(COOKIE)):
        return console.render(request, "login.html", 403, next=target, failed=True, nav="")
    if not guard.locked or not guard.check_token(_text(form.get("token")) or ""):
        await asyncio.sleep(0.5)  # slows guessing down
        return console.render(request, "login.html", 403, next=target, failed=True, nav="")
    response = RedirectResponse(_next(target, root), 303)
    response.set_cookie(
        COOKIE,
        guard.session_value(),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=root or "/",
    )
    return response


async def logout(request: Request) -> Response:
    console = console_of(request)
    form = await request.form()
    if not console.guard.csrf_ok(_text(form.get("csrf")), request.cookies.get(COOKIE)):
        return console.render(request, "error.html", 403, message="this form is out of date")
    root = request.scope.get("root_path", "")
    response = RedirectResponse(f"{root}/login", 303)
    response.delete_cookie(COOKIE, path=root or "/")
    return response


def routes() -> list[Route]:
    return [
        Route("/pipelines", pipelines),
        Route("/dead-letters", dead_letters),
        Route("/dead-letters/{index}/letters/{handle}", dead_letter),
        Route("/dead-letters/{index}/{action}", confirm, methods=["GET"]),
        Route("/dead-letters/{index}/{action}", act, methods=["POST"]),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]
