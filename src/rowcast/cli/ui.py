"""``rowcast ui``: the web console (`rowcast.ui`), served by uvicorn until Ctrl-C.

Everything is checked before the port opens: the extra is installed, the options
are safe (a token for any address but loopback), the event store exists (it is
never created), the port is free. Each failure is one message and exit status 2.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from typing import Any

import click

from ..backends import missing_extra
from ..errors import ConfigError, RowcastError
from ..store import DEFAULT_URL, EventStore

__all__ = ["serve", "ui"]


def _imports() -> Any:
    """uvicorn, once starlette and jinja2 are known to be there too."""
    try:
        import jinja2  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as error:
        raise missing_extra("ui", "the web console", error) from error
    return uvicorn


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as error:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {error.strerror or error}; give another --port "
            "(0: any free one) or --host"
        ) from error
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(config: Any, root_path: str = "", announce: bool = True) -> None:
    """Check `config` (a `rowcast.ui.ConsoleConfig`), then serve the console until stopped."""
    uvicorn = _imports()
    from ..ui import create_app

    config.check()
    with contextlib.closing(EventStore(config.store, create=False)):
        pass  # exists and answers: the console will not create one
    app = create_app(config)
    sock = _bind(config.host, config.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    if announce:
        click.echo(f"rowcast console on http://{shown}:{port}{root_path}/", err=True)
        click.echo(f"  store: {config.shown_store}", err=True)
        if not config.token:
            click.echo("  read-only (no --token): replay and drop are refused", err=True)
        click.echo("  stop with Ctrl-C", err=True)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            proxy_headers=True,
            root_path=root_path,
            timeout_graceful_shutdown=2,
            lifespan="on",
        )
    )
    # uvicorn stops on SIGINT and SIGTERM, then raises the signal again: both end here, 0
    previous = signal.signal(signal.SIGTERM, _stop) if _main_thread() else None
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if getattr(server, "started", True) is False:
        raise RowcastError("the console did not start (see the message above)")


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _stop(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


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
