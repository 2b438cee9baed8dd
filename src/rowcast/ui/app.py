"""The console's ASGI application: `create_app(config)`, on Starlette.

The application holds one `rowcast.ui.console.Console`: what every request may
use, opened at startup. `GuardMiddleware` runs before every route (Host, token, Origin, security
headers); the routes live in `rowcast.ui.pages` (reading) and `rowcast.ui.operate`
(pipelines, dead letters, login). Pages are Jinja templates, with htmx (vendored
in ``static/``: the console works offline) for searching, paging and refreshing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import RowcastError
from . import filters, operate, pages
from .config import ConsoleConfig
from .console import Console
from .live import Broadcaster
from .security import COOKIE, Guard

__all__ = ["GuardMiddleware", "create_app"]

HERE = Path(__file__).parent
PUBLIC = ("/static/", "/login")
HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


class GuardMiddleware:
    """Host check, token check, Origin check and security headers, before every route."""

    def __init__(self, app: ASGIApp, console: Console) -> None:
        self.app = app
        self.console = console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        guard = self.console.guard
        refused = self._refused(request, guard)
        if refused is not None:
            await _with_headers(refused)(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _refused(self, request: Request, guard: Guard) -> Response | None:
        host = request.headers.get("host")
        if not guard.host_ok(host):
            return PlainTextResponse(
                "this console answers to localhost only (start it with --token to serve "
                "other host names)",
                400,
            )
        if request.method not in ("GET", "HEAD"):
            forwarded = request.headers.get("x-forwarded-host")
            origin = request.headers.get("origin")
            if not (guard.same_origin(origin, host) or guard.same_origin(origin, forwarded)):
                return PlainTextResponse("refused: this form was sent from another site", 403)
        path = request.url.path[len(request.scope.get("root_path", "")) :] or "/"
        if not guard.locked or path.startswith(PUBLIC):
            return None
        if guard.authenticated(request.cookies.get(COOKIE), request.headers.get("authorization")):
            return None
        if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            root = request.scope.get("root_path", "")
            return RedirectResponse(f"{root}/login?next={filters.quoted_path(path)}", 303)
        return PlainTextResponse("the console asks for its token: log in at /login", 401)


def _with_headers(response: Response) -> Response:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def create_app(config: ConsoleConfig) -> Starlette:
    """The console for `config` (checked first: a `ConfigError` for anything unsafe)."""
    config.check()
    console = Console(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await asyncio.to_thread(console.open)
        assert console.store is not None
        console.live = Broadcaster(console.store)
        console.live.start(asyncio.get_running_loop())
        console.sampler.start()
        try:
            yield
        finally:
            await asyncio.to_thread(console.close)

    routes = [
        *pages.routes(),
        *operate.routes(),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]

    async def rowcast_error(request: Request, error: Exception) -> Response:
        return console.failure(request, error, 400 if isinstance(error, RowcastError) else 500)

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={RowcastError: rowcast_error, Exception: rowcast_error},
    )
    app.state.console = console
    app.add_middleware(GuardMiddleware, console=console)
    return app
