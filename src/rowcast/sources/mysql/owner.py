"""Whose a server id is: one per binlog reader, and a lock so that two never share one.

Private to `rowcast.sources.mysql`. The server tells binlog readers apart by
their server id only, and drops a reader's dump thread when another one
connects with the same id: two readers with one id kick each other off for
ever, each reconnecting in turn. So:

- a reader given no id (``server_id=``, ``?server_id=``, ``--server-id``)
  derives one: from its checkpoint's identity (`derived_id`: a relay gets the
  same id every run, another relay another one), or at random (`random_id`,
  ``rowcast tail``), from a range the derived ids never reach;
- while it reads, a reader holds the user-level lock ``rowcast_server_id_<id>``
  (``GET_LOCK``, no privilege needed) on a connection of its own (`Hold`). A
  second reader with that id is refused with the holder's connection named
  (`refuse_a_taken_id`); the lock goes with the holder's connection, as soon as
  the server sees it closed (a killed reader's too). A replica of another kind
  registered with the id (``SHOW SLAVE HOSTS``, where the user may run it) is
  refused as well.
"""

from __future__ import annotations

import contextlib
import secrets
import time
import zlib
from typing import Any

from ...errors import ConfigError
from .._reader import reader_of
from .server import ServerURL, connect

__all__ = ["Hold", "derived_id", "lock_name", "random_id", "refuse_a_taken_id"]

_DERIVED = (100_000, 2_000_000_000)  # base and span of derived ids
_RANDOM = (2_100_000_000, 2_000_000_000)  # of random ones: above every derived id
_KEEP_EVERY = 5.0  # seconds between looks at whether the lock is still held (the binlog
# library reconnects a lost stream by itself: the lock may have gone with the server)


def derived_id(url: ServerURL, checkpoint: Any) -> int:
    """The server id of the reader with `checkpoint` on the server at `url`."""
    key = f"rowcast:{url.host}:{url.port}:{reader_of(checkpoint)}".encode()
    return _DERIVED[0] + zlib.crc32(key) % _DERIVED[1]


def random_id() -> int:
    """A server id for a reader without a checkpoint (a tail): its own, at random."""
    return _RANDOM[0] + secrets.randbelow(_RANDOM[1])


def lock_name(server_id: int) -> str:
    return f"rowcast_server_id_{server_id}"


def _holder(cur: Any, server_id: int) -> str | None:
    """Who holds the lock of `server_id` (a description), or None when no one does."""
    cur.execute("SELECT IS_USED_LOCK(%s)", (lock_name(server_id),))
    (connection,) = cur.fetchone()
    if connection is None:
        return None
    cur.execute(
        "SELECT USER, HOST, TIME FROM information_schema.PROCESSLIST WHERE ID = %s",
        (connection,),
    )
    row = cur.fetchone()
    where = f" (user {row[0]} from {row[1]}, connected {row[2]}s)" if row else ""
    return f"connection {connection}{where}"


def _in_use(target: str, server_id: int, who: str) -> ConfigError:
    return ConfigError(
        f"{target}: server id {server_id} is in use by another binlog reader, {who}: two "
        "readers with one server id kick each other off the server for ever. Stop that "
        "reader first (the same relay started twice?), or give this one its own id "
        "(?server_id= or --server-id); rowcast tail needs none: it reads with a random id"
    )


def refuse_a_taken_id(conn: Any, target: str, server_id: int, patience: float) -> None:
    """A `ConfigError` when another reader holds `server_id` for longer than `patience`
    seconds (a reader just killed lets go within that), or a replica registered it."""
    with conn.cursor() as cur:
        cur.execute("SELECT GET_LOCK(%s, %s)", (lock_name(server_id), patience))
        if cur.fetchone()[0] == 1:
            cur.execute("SELECT RELEASE_LOCK(%s)", (lock_name(server_id),))
        else:
            raise _in_use(target, server_id, _holder(cur, server_id) or "a rowcast reader")
        try:
            cur.execute("SHOW SLAVE HOSTS")
            replicas = [row for row in cur.fetchall() if int(row[0]) == server_id]
        except Exception:  # no privilege to list replicas: the lock is the check
            replicas = []
    if replicas:
        raise _in_use(target, server_id, f"a replica registered from host {replicas[0][1]!r}")


class Hold:
    """The lock of one reader's server id, held on a connection of its own while it reads."""

    def __init__(self, url: ServerURL, server_id: int, patience: float) -> None:
        self.url = url
        self.server_id = server_id
        self.patience = patience
        self._conn: Any = None
        self._checked = 0.0

    def take(self) -> None:
        """Take the lock (waiting `patience` for a reader letting go), or `ConfigError`."""
        conn = connect(self.url)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT GET_LOCK(%s, %s)", (lock_name(self.server_id), self.patience))
                if cur.fetchone()[0] != 1:
                    who = _holder(cur, self.server_id) or "a rowcast reader"
                    raise _in_use(self.url.masked, self.server_id, who)
        except BaseException:
            conn.close()
            raise
        self.release()
        self._conn, self._checked = conn, time.monotonic()

    def keep(self, *, now: bool = False) -> None:
        """Make sure the lock is still this reader's (every 5 s, or `now`): taken again
        after its connection was lost (a server restart, ``wait_timeout``), a `ConfigError`
        when another reader took the id meanwhile. A server still away raises its
        connection error (worth a reconnect)."""
        if not now and time.monotonic() - self._checked < _KEEP_EVERY:
            return
        try:
            with self._conn.cursor() as cur:
                cur.execute(
                    "SELECT IS_USED_LOCK(%s) = CONNECTION_ID()", (lock_name(self.server_id),)
                )
                held = cur.fetchone()[0] == 1
        except Exception:  # the connection went away, and the lock with it
            held = False
        if not held:
            self.take()
        self._checked = time.monotonic()

    def release(self) -> None:
        """Let the lock go (closing its connection does); idempotent."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already gone with the server
                conn.close()
