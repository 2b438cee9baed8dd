"""The web console (``rowcast ui``, extra ``rowcast[ui]``): streams, live changes, a row's
history, pipelines and dead letters, in the browser.

Built on Starlette (served by uvicorn), Jinja templates and htmx, which is
vendored in ``static/`` so that the console works with no network. The layers,
each its own module: `config` (what it was started with: the only places it
reads or writes), `security` (token, session, CSRF, Host), `data` (the event
store, a page at a time), `history` and `revisions` (a row's changes and audit
revisions), `live` (one watch fanned out), `pipelines` (status reports sampled),
`deadletters` (`rowcast.dlq`), `console` (what requests share), `pages` and
`operate` (the routes), `app` (`create_app`), `serve` (what ``rowcast ui`` runs).
"""

from typing import Any

from .config import ConsoleConfig

__all__ = ["ConsoleConfig", "create_app"]


def __getattr__(name: str) -> Any:
    # create_app needs the extra (Starlette, Jinja): imported when asked for, so that
    # `rowcast.ui.serve` can say which pip command installs it
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module 'rowcast.ui' has no attribute {name!r}")
