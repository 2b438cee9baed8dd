"""nats-py (asyncio) behind the blocking NATS sink and consumer: a loop thread, a connect,
and which streams hold a subject."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from ..errors import PermanentSinkError, TransientSinkError

__all__ = ["LoopThread", "connect", "credentials", "overlapping", "refused_access"]

T = TypeVar("T")


class LoopThread:
    """A private event loop in a daemon thread, started by the first `run`.

    `who` (``"NATS sink <url>"``) starts error messages; `timeout` is the owner's.
    """

    def __init__(self, name: str, who: str, timeout: float, log: logging.Logger) -> None:
        self.name = name
        self.who = who
        self.timeout = timeout
        self.log = log
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """`coroutine`'s result or error, from the loop; `TransientSinkError` if it is stuck.

        The coroutine bounds each of its waits; this only catches a stuck loop.
        """
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=self._loop.run_forever, name=self.name, daemon=True
            )
            self._thread.start()
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(self.timeout * 3 + 5)
        except concurrent.futures.TimeoutError as e:
            future.cancel()
            raise TransientSinkError(f"{self.who}: no progress in {self.timeout:g} s") from e

    def close(self, disconnect: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run `disconnect` (errors only logged), then stop the loop; a later `run` starts anew."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(disconnect(), loop).result(self.timeout)
        except Exception as e:  # closing a broken connection: nothing left to save
            self.log.debug("closing %s: %s", self.who, e)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(self.timeout)
        if not thread.is_alive():
            loop.close()
        self._loop = self._thread = None


def credentials(server: str) -> tuple[str, dict[str, str]]:
    """`server` without its user info, and that user info as nats-py's options (``user``
    and ``password``, or ``token``), percent-decoded: nats-py sends a URL's as written,
    so a password with an ``@`` or a ``/`` in it (percent-encoded, as a URL needs) would
    reach the server still encoded."""
    parts = urlsplit(server)
    if parts.username is None:
        return server, {}
    host = parts.netloc.rpartition("@")[2]
    bare = urlunsplit(parts._replace(netloc=host))
    if parts.password is None:
        return bare, {"token": unquote(parts.username)}
    return bare, {"user": unquote(parts.username), "password": unquote(parts.password)}


async def connect(
    nats: Any,
    server: str,
    *,
    name: str,
    who: str,
    timeout: float,
    log: logging.Logger,
    seen: list[BaseException] | None = None,
    **options: Any,
) -> Any:
    """A connection to `server` within `timeout`, else a `TransientSinkError` (``<who>:
    cannot connect``), or a `PermanentSinkError` when the server refuses the credentials.

    nats-py's reconnection is off (a broken connection is an error the owner retries,
    never a silent buffer) and so are its otherwise endless retries of the first
    connect; its async errors are logged at DEBUG, not ERROR, and appended to `seen`
    (e.g. a permissions violation, which the server reports on the side). `options`:
    more settings.
    """
    seen = [] if seen is None else seen
    server, secrets = credentials(server)

    async def on_error(error: Exception) -> None:
        seen.append(error)
        log.debug("%s: %r", who, error)

    nc = nats.NATS()
    try:
        await asyncio.wait_for(
            nc.connect(
                servers=[server],
                name=name,
                connect_timeout=timeout,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.1,  # else a refused connect waits out `timeout`
                error_cb=on_error,
                **secrets,
                **options,
            ),
            timeout,
        )
    except (TimeoutError, nats.errors.Error, OSError) as e:
        with contextlib.suppress(Exception):  # nats-py leaves a refused socket open
            await nc.close()
        why = f"{e!r}, after {seen[-1]!r}" if seen and seen[-1] is not e else repr(e)
        if refused_access(e, *seen):
            raise PermanentSinkError(
                f"{who}: cannot connect: {why}",
                "give a user and password (or token) the server accepts in the URL",
            ) from e
        raise TransientSinkError(f"{who}: cannot connect: {why}") from e
    return nc


def refused_access(*errors: BaseException) -> bool:
    """Whether one of `errors` is the server refusing the credentials or a permission."""
    for error in errors:
        text = f"{type(error).__name__} {error}".lower()
        if "authorization" in text or "permissions violation" in text or "credentials" in text:
            return True
    return False


async def overlapping(nc: Any, subject: str, timeout: float) -> list[str]:
    """The JetStream streams whose subjects overlap `subject` (wildcards too), by name;
    every stream when `subject` is empty.

    The server's own test, through its stream names request filtered by subject.
    """
    request = json.dumps({"subject": subject} if subject else {}).encode()
    reply = await nc.request("$JS.API.STREAM.NAMES", request, timeout=timeout)
    names = json.loads(reply.data).get("streams") or []
    return [str(name) for name in names]
