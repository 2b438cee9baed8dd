"""Servers that know a password, for the tests that no command ever prints one.

`World` holds, for one test module: a MariaDB user identified by `SECRET` (and one
for which it is the wrong password), a table it may read but not write, a PostgreSQL
schema holding an event store, a redis-server and a nats-server (JetStream) of their
own that require `SECRET`. `with_secret` puts the password in a URL in each place the
command line accepts it: in the URL, as ``${ROWCAST_TEST_SECRET}``, in a password file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pymysql
import pytest

from rowcast.store import EventStore
from rowcast.testing.sink import closed_port
from tests.conftest import IN_CI, private_schema, require_redis, require_server
from tests.sinks import require_nats, require_rabbitmq
from tests.test_relay import free_port, wait_for

CORE = uuid.uuid4().hex[:16]  #: in every form of the password: what no output may hold
SECRET = f"Rc{CORE}@/:%#?&+!"  #: characters a URL must percent-encode, on purpose
VARIABLE = "ROWCAST_TEST_SECRET"
PLACES = ("url", "env", "file")
ROWCAST = [sys.executable, "-c", "import tests.secret_world as w; w.loud_main()"]


def with_secret(url: str, place: str, password_file: Path) -> str:
    """`url` (``scheme://user@host...``, without a password) with `SECRET` as its password,
    given in `place`. Plain text surgery: the URL may be malformed on purpose."""
    if place == "file":
        return f"{url}{'&' if '?' in url else '?'}password_file={password_file}"
    secret = quote(SECRET, safe="") if place == "url" else f"${{{VARIABLE}}}"
    scheme, _, rest = url.partition("://")
    user, at, host = rest.partition("@")
    if not at:
        user, host = "", rest
    return f"{scheme}://{user}:{secret}@{host}"


def leaks(text: str) -> list[str]:
    """The lines of `text` that hold the password, whole or in part."""
    return [line for line in text.splitlines() if CORE in line]


def loud_main() -> None:
    """``rowcast`` that prints the traceback of every error it reports, with its causes:
    all a traceback (ROWCAST_DEBUG=1) could ever show."""
    import traceback

    from rowcast.cli import group, main

    report = group.print_error

    def loud(message: object) -> None:
        traceback.print_exc()
        report(message)

    group.print_error = loud  # type: ignore[assignment]
    main(prog_name="rowcast")


class _Server:
    """A server process of the test's own, on a free port, killed at the end."""

    def __init__(self, name: str, args: list[str], ready: object) -> None:
        binary = shutil.which(name)
        if binary is None:
            message = f"{name} is not installed"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
        self.process = subprocess.Popen(
            [binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for(ready, 20, f"{name} to start")  # type: ignore[arg-type]

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


def _listening(port: int) -> bool:
    import socket

    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


class World:
    """Everything the secret tests talk to; see the module docstring."""

    def __init__(self, tmp: Path, stack: contextlib.ExitStack) -> None:
        require_server("mysql")
        require_server("postgresql")
        require_redis()
        require_nats()
        self.amqp_up = True
        try:
            require_rabbitmq()
        except pytest.skip.Exception:
            self.amqp_up = False
        self.tmp = tmp
        self.password_file = tmp / "secret"
        self.password_file.write_text(SECRET + "\n")
        self.password_file.chmod(0o600)
        self.closed = closed_port()
        hexa = CORE[:8]
        self.user, self.wrong_user = f"rcsec_{hexa}", f"rcsecw_{hexa}"
        self.table = f"rcsec_{hexa}"
        root = pymysql.connect(host="127.0.0.1", user="root", database="test", autocommit=True)
        stack.callback(root.close)
        with root.cursor() as cur:
            cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (self.user, SECRET))
            stack.callback(self._drop_users, root)
            cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (self.wrong_user, "not it"))
            cur.execute(f"GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO {self.user}")
            cur.execute(f"CREATE TABLE test.{self.table} (id INT PRIMARY KEY, n INT)")
            stack.callback(self._drop_table, root)
            cur.execute(f"GRANT SELECT ON test.{self.table} TO {self.user}")
        self.mysql = f"mysql://{self.user}@127.0.0.1:3306/test"
        self.mysql_wrong = f"mysql://{self.wrong_user}@127.0.0.1:3306/test"
        self.schema = stack.enter_context(private_schema("rcsec"))
        self.postgres = "postgresql://postgres@127.0.0.1:5432/test"
        self.store = f"{self.postgres}?schema={self.schema}"
        EventStore(f"postgresql://postgres@127.0.0.1:5432/test?schema={self.schema}").close()
        redis_port = free_port()
        redis = _Server(
            "redis-server",
            [
                "--port",
                str(redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--requirepass",
                SECRET,
            ],
            lambda: _listening(redis_port),
        )
        stack.callback(redis.kill)
        self.redis = f"redis://127.0.0.1:{redis_port}/0"
        self.redis_wrong = f"redis://intruder@127.0.0.1:{redis_port}/0"
        nats_port = free_port()
        nats = _Server(
            "nats-server",
            [
                "-a",
                "127.0.0.1",
                "-p",
                str(nats_port),
                "-js",
                "-sd",
                str(tmp / "nats"),
                "--user",
                "rowcast",
                "--pass",
                SECRET,
            ],
            lambda: _listening(nats_port),
        )
        stack.callback(nats.kill)
        self.nats = f"nats://rowcast@127.0.0.1:{nats_port}"
        self.nats_wrong = f"nats://intruder@127.0.0.1:{nats_port}"
        self.amqp_wrong = "amqp://guest@127.0.0.1:5672/%2F"  # guest's password is guest

    def url(self, url: str, place: str) -> str:
        return with_secret(url, place, self.password_file)

    def file(self, name: str, text: str) -> Path:
        path = self.tmp / name
        path.write_text(textwrap.dedent(text))
        return path

    def _drop_users(self, root: pymysql.Connection) -> None:  # type: ignore[type-arg]
        with root.cursor() as cur:
            for user in (self.user, self.wrong_user):
                cur.execute("DROP USER IF EXISTS %s@'%%'", (user,))

    def _drop_table(self, root: pymysql.Connection) -> None:  # type: ignore[type-arg]
        with root.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS test.{self.table}")


def environment(**more: str) -> dict[str, str]:
    """The environment of a command under test: the password's variable, debug on."""
    return {**os.environ, VARIABLE: SECRET, "ROWCAST_DEBUG": "1", **more}


@contextlib.contextmanager
def world(tmp: Path) -> Iterator[World]:
    with contextlib.ExitStack() as stack:
        yield World(tmp, stack)
