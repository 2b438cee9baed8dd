"""`Console`: what every request of the web console may use, opened at startup.

The event store (opened with ``create=False``: the console never creates one), its
`rowcast.ui.data.StoreView`, the live `rowcast.ui.live.Broadcaster`, the Pipelines
`rowcast.ui.pipelines.Sampler`, the audit reader of ``--source``, the `Guard` and
the templates; `Console.render` fills in what every page shows.
"""

from __future__ import annotations

import logging
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from ..store import EventStore
from . import filters
from .config import ConsoleConfig
from .data import StoreView
from .live import Broadcaster
from .pipelines import Sampler
from .security import COOKIE, Guard, scrub

__all__ = ["Console", "console_of"]

log = logging.getLogger("rowcast.ui")


class Console:
    """Everything a request may use: opened at startup, closed at shutdown."""

    def __init__(self, config: ConsoleConfig) -> None:
        self.config = config
        self.guard = Guard(config.token, config.host)
        self.secrets = config.secrets()
        self.store: EventStore | None = None
        self.view: StoreView | None = None
        self.live: Broadcaster | None = None
        self.sampler = Sampler(config.checkpoints, config.status_interval)
        self.audit: Any = None
        env = Environment(
            loader=PackageLoader("rowcast.ui", "templates"),
            autoescape=select_autoescape(default=True),
        )
        filters.install(env, self.secrets)
        self.templates = Jinja2Templates(env=env)

    def open(self) -> None:
        """Open the store (it must exist) and the audit reader; `StoreError` otherwise."""
        self.store = EventStore(self.config.store, create=False)
        self.view = StoreView(self.store, self.config.page)
        if self.config.source:
            from .revisions import AuditReader

            self.audit = AuditReader(self.config.source)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
        self.sampler.stop()
        if self.audit is not None:
            self.audit.close()
        if self.store is not None:
            self.store.close()

    def scrub(self, text: str) -> str:
        return scrub(text, self.secrets)

    def render(
        self, request: Request, template: str, status_code: int = 200, **context: Any
    ) -> Response:
        cookie = request.cookies.get(COOKIE)
        authed = self.guard.authenticated(cookie, request.headers.get("authorization"))
        context.update(
            request=request,
            root=request.scope.get("root_path", ""),
            config=self.config,
            csrf=self.guard.csrf(cookie),
            authed=authed,
            locked=self.guard.locked,
            can_write=authed,
            partial=request.headers.get("hx-request") == "true"
            and request.headers.get("hx-boosted") != "true",
        )
        return self.templates.TemplateResponse(request, template, context, status_code=status_code)

    def failure(self, request: Request, error: BaseException, status_code: int = 500) -> Response:
        """A page for `error`, its message scrubbed of every secret."""
        message = self.scrub(str(error) or type(error).__name__)
        log.warning("%s %s: %s", request.method, request.url.path, message)
        return self.render(request, "error.html", status_code, message=message)


def console_of(request: Request) -> Console:
    """The `Console` of the application serving `request`."""
    console: Console = request.app.state.console
    return console
