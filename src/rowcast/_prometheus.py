"""Serving a Prometheus collector over HTTP (``--metrics-port`` of relay and consume)."""

from __future__ import annotations

from typing import Any

from .backends import missing_extra
from .errors import ConfigError

__all__ = ["serve"]


def serve(collector: Any, port: int, addr: str = "0.0.0.0") -> Any:
    """Serve `collector` at ``http://<addr>:<port>/metrics`` on a daemon thread; returns the server.

    The collector is read at each scrape (``auto_describe`` off: nothing is collected
    up front). Needs prometheus-client (a `ConfigError` naming the extra); a port in
    use is a `ConfigError` too. Stop it with ``server.shutdown()``.
    """
    try:
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError as e:
        raise missing_extra("metrics", "--metrics-port", e) from e
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    try:
        server, _thread = start_http_server(port, addr=addr, registry=registry)
    except OSError as e:
        raise ConfigError(f"cannot serve metrics on {addr}:{port}: {e.strerror or e}") from e
    return server
