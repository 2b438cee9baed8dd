"""``rowcast ui``: the web console (`rowcast.ui`), served by uvicorn until Ctrl-C.

Everything is checked before the port opens (`rowcast.ui.serve`): the extra is
installed, the options are safe (a token for any address but loopback), the event
store exists (it is never created), the port is free. Each failure is one message
and exit status 2.
"""

from __future__ import annotations

import click

from ..errors import ConfigError
from ..store import DEFAULT_URL

__all__ = ["ui"]


@click.command()
@click.option(
    "--store",
    default=DEFAULT_URL,
    show_default=True,
    metavar="URL",
    envvar="ROWCAST_EVENTS_URL",
    help="The event store to show (also $ROWCAST_EVENTS_URL); it must exist.",
)
@click.option(
    "--checkpoint",
    "checkpoints",
    multiple=True,
    metavar="URL",
    help="A checkpoint store whose relays and consumers the Pipelines page shows (repeatable).",
)
@click.option(
    "--source",
    metavar="URL",
    help="The captured database: a row's page shows its audit revisions from <table>_rev.",
)
@click.option(
    "--dead-letters",
    "dead_letters",
    multiple=True,
    metavar="URL",
    help="Dead letters to show, as for `rowcast dlq` (repeatable).",
)
@click.option(
    "--replay-to",
    metavar="URL",
    help="The sink a relay's dead letters (an event store) replay to.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8750, show_default=True, help="0: any free."
)
@click.option(
    "--token",
    envvar="ROWCAST_UI_TOKEN",
    metavar="TOKEN",
    help="Needed to replay or drop, and then to read too (also $ROWCAST_UI_TOKEN); "
    "required for any --host but loopback.",
)
@click.option(
    "--root-path", default="", metavar="PATH", help="The URL prefix behind a reverse proxy."
)
def ui(
    store: str,
    checkpoints: tuple[str, ...],
    source: str | None,
    dead_letters: tuple[str, ...],
    replay_to: str | None,
    host: str,
    port: int,
    token: str | None,
    root_path: str,
) -> None:
    """Serve the web console: streams, live changes, a row's history, pipelines, dead letters.

    It binds to 127.0.0.1 unless told otherwise, opens only the URLs given here and
    never creates a store. Without a token it is read-only; with one, every page asks
    for it (log in once per browser).
    """
    from ..ui.config import ConsoleConfig
    from ..ui.serve import serve

    if root_path and (not root_path.startswith("/") or root_path.endswith("/")):
        raise ConfigError(f"--root-path is like /rowcast (no trailing slash), not {root_path!r}")
    config = ConsoleConfig(
        store=store,
        checkpoints=list(checkpoints),
        source=source,
        dead_letters=list(dead_letters),
        replay_to=replay_to,
        token=token or None,
        host=host,
        port=port,
    )
    serve(config, root_path)
