"""Serving the console: checked first, then uvicorn on a socket bound here, until a signal.

`serve` is what ``rowcast ui`` and ``rowcast demo --ui`` run. It checks everything
before the port opens: the extra is installed (else the `ConfigError` naming
``pip install 'rowcast[ui]'``), the configuration is safe (`ConsoleConfig.check`),
the event store exists (opened with ``create=False``: never created), the port is
free (bound here, so the message can name it). SIGINT and SIGTERM stop it cleanly.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import threading
from typing import Any

from ..backends import missing_extra
from ..errors import ConfigError, RowcastError
from ..store import EventStore
from .config import ConsoleConfig

__all__ = ["serve"]


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


def serve(config: ConsoleConfig, root_path: str = "", announce: bool = True) -> None:
    """Check `config`, then serve the console until SIGINT or SIGTERM (module docstring)."""
    uvicorn = _imports()
    from .app import create_app

    config.check()
    with contextlib.closing(EventStore(config.store, create=False)):
        pass  # exists and answers: the console will not create one
    app = create_app(config)
    sock = _bind(config.host, config.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    if announce:
        print(f"rowcast console on http://{shown}:{port}{root_path}/", file=sys.stderr)
        print(f"  store: {config.shown_store}", file=sys.stderr)
        if not config.token:
            print("  read-only (no --token): replay and drop are refused", file=sys.stderr)
        print("  stop with Ctrl-C", file=sys.stderr)
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
