"""Where a consumer keeps the position of the last transaction it fully handled.

A relay (or ``rowcast tail``) saves a source position after each transaction it
has delivered; on restart it loads it and resumes there, losing and repeating
nothing. Positions are opaque non-empty strings (a binlog file:offset, a GTID
set, an LSN). `open_checkpoint(url, name)` picks the backend by URL:

* a path (``./pos.json``, ``~/pos``) or ``file:///abs/path``: `FileCheckpoint`, one
  JSON file per name (``<path>`` for ``"default"``, ``<path>.<name>`` otherwise);
* ``sqlite:///x.db``, ``postgresql://``, ``mysql://``, ``mariadb://`` (or with an
  explicit ``+driver``): `SQLCheckpoint`, a row of table ``rowcast_checkpoint``;
* ``redis://host:port/db``, ``rediss://``: `RedisCheckpoint`, a hash
  ``rowcast:checkpoint:<name>``.

The contract, on every backend:

* ``load()`` is the last saved position, or None when nothing was saved under
  the name; data it cannot read (a corrupt file, a key of another type) is a
  `StoreError`, never None.
* ``save(position)`` is durable when it returns, and the last save wins. A
  Redis checkpoint is only as durable as the server's own persistence (RDB,
  AOF): a Redis without persistence forgets it on restart.
* A name is 1-200 characters of ``A-Z a-z 0-9 _ . -`` starting with a letter or
  digit: a file suffix, a key and a row alike. A URL may carry it as
  ``?name=...`` (a plain path never does); the URL's name is used when the
  argument is left at ``"default"``, and two different names are a `ConfigError`.
* `open_checkpoint` connects (and creates the table or the directory), so a
  server that is down or a wrong password fails at once with a `StoreError`,
  before the consumer reads anything. A malformed URL, an unknown scheme or a
  missing driver is a `ConfigError`.
* Driver errors become `StoreError` (``from`` the driver error), whose message
  names the operation and the URL with its password masked as ``***``.
* ``close()`` is idempotent; a closed checkpoint raises `StoreError`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn, Protocol, Self, runtime_checkable
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from ._url import masked
from .errors import ConfigError, StoreError

__all__ = ["Checkpoint", "FileCheckpoint", "RedisCheckpoint", "SQLCheckpoint", "open_checkpoint"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")
_DRIVERS = {  # bare schemes -> the drivers rowcast's extras install
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
}
_UPSERTS = {"sqlite": "", "postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}  # extras
_SCHEMES = "a file path, file:///abs/path, sqlite:///x.db, postgresql://, mysql://, redis://"


@runtime_checkable
class Checkpoint(Protocol):
    """The saved position of one named consumer (see the module docstring for the contract)."""

    url: str  #: the URL it was opened with, password masked

    def load(self) -> str | None:
        """The last saved position, or None when nothing was saved yet."""

    def save(self, position: str) -> None:
        """Keep `position`; it is durable when this returns."""

    def close(self) -> None:
        """Release connections; idempotent."""

    def __enter__(self) -> Self:
        """The checkpoint itself; `close` on leaving the block."""

    def __exit__(self, *exc: object) -> None:
        """Close the checkpoint."""


class _Base:
    """Validation, the closed flag and error translation, shared by every backend."""

    def __init__(self, url: str, name: str) -> None:
        self.url = masked(url)
        self.name = name
        self._closed = False

    def load(self) -> str | None:
        self._check_open("load")
        return self._load()

    def save(self, position: str) -> None:
        if not isinstance(position, str):
            raise TypeError(f"a checkpoint position is a str, not {type(position).__name__}")
        if not position or "\x00" in position:
            raise ConfigError(
                f"a checkpoint position must be a non-empty string without NUL, not {position!r}"
            )
        self._check_open("save")
        self._save(position)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self, operation: str) -> None:
        if self._closed:
            raise StoreError(f"cannot {operation} checkpoint {self.name!r} at {self.url}: closed")

    def _fail(self, operation: str, error: BaseException) -> NoReturn:
        raise StoreError(
            f"checkpoint {self.name!r} at {self.url}: {operation} failed: {error}"
        ) from error

    def _load(self) -> str | None:
        raise NotImplementedError

    def _save(self, position: str) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        pass


class FileCheckpoint(_Base):
    """A JSON file ``{"name", "position", "updated_at"}``, replaced atomically on each save.

    Name ``"default"`` lives at `path` itself, any other name at ``<path>.<name>``.
    The parent directory is created when missing. Several processes may share
    the file; a reader sees the old or the new content, never a mix.
    """

    def __init__(self, url: str, path: str, name: str = "default") -> None:
        super().__init__(url, name)
        if not path or path.endswith(("/", os.sep)):
            raise ConfigError(f"checkpoint path {path!r} names a directory; give a file path")
        base = Path(path).expanduser().absolute()
        self.path = base if name == "default" else base.with_name(f"{base.name}.{name}")
        if self.path.is_dir():
            raise ConfigError(f"checkpoint path {str(self.path)!r} is a directory; give a file")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            self._fail(f"creating directory {str(self.path.parent)!r}", e)

    def _load(self) -> str | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as e:
            self._fail(f"reading {str(self.path)!r}", e)
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        position = data.get("position") if isinstance(data, dict) else None
        if not isinstance(position, str) or not position:
            raise StoreError(
                f"checkpoint file {str(self.path)!r} is corrupt (expected JSON with a "
                f'"position" string, got {text[:80]!r}); restore it, or delete it to start '
                "over from the source's default start"
            )
        if data.get("name", self.name) != self.name:
            raise StoreError(
                f"checkpoint file {str(self.path)!r} belongs to checkpoint {data['name']!r}, "
                f"not {self.name!r}; was it copied or renamed by hand?"
            )
        return position

    def _save(self, position: str) -> None:
        record = {"name": self.name, "position": position, "updated_at": time.time()}
        data = json.dumps(record, ensure_ascii=False) + "\n"
        directory = self.path.parent
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            if os.name == "posix":  # make the rename itself durable
                dir_fd = os.open(directory, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as e:
            self._fail(f"writing {str(self.path)!r}", e)


class SQLCheckpoint(_Base):
    """A row of table ``rowcast_checkpoint`` in any database SQLAlchemy reaches.

    SQLite, PostgreSQL and MySQL/MariaDB. The table is created when missing; each
    save is one upsert (``ON CONFLICT`` / ``ON DUPLICATE KEY``), safe under
    concurrency, in its own committed transaction.
    """

    def __init__(self, url: str, name: str = "default") -> None:
        super().__init__(url, name)
        import sqlalchemy as sa
        from sqlalchemy.dialects import mysql

        try:
            target = sa.make_url(url).difference_update_query(["name"])
            scheme = target.drivername
            target = target.set(drivername=_DRIVERS.get(scheme, scheme))
            backend = target.get_backend_name()
        except (sa.exc.ArgumentError, ValueError) as e:
            raise ConfigError(f"malformed database URL {self.url}: {e}") from e
        if backend not in _UPSERTS:
            raise ConfigError(f"no checkpoint backend for {self.url}; use {_SCHEMES}")
        if backend == "sqlite":
            database = target.database or ""
            if database in ("", ":memory:") or "mode=memory" in database:
                raise ConfigError(f"{self.url} is lost at exit; use sqlite:///path/to/file.db")
            if not database.startswith("file:"):
                with contextlib.suppress(OSError):  # else sqlite's own error says more
                    Path(database).expanduser().absolute().parent.mkdir(parents=True, exist_ok=True)
        elif backend in ("mysql", "mariadb") and "charset" not in target.query:
            target = target.update_query_dict({"charset": "utf8mb4"})
        try:
            self._engine = sa.create_engine(target, pool_pre_ping=True)
        except (sa.exc.NoSuchModuleError, ImportError) as e:
            hint = f"pip install 'rowcast[{_UPSERTS[backend]}]'"
            raise ConfigError(f"no driver for checkpoint {self.url}: {e}; {hint}") from e
        except (sa.exc.ArgumentError, ValueError, TypeError) as e:
            raise ConfigError(f"malformed database URL {self.url}: {e}") from e
        text = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
        key = sa.String(200).with_variant(
            mysql.VARCHAR(200, collation="utf8mb4_bin"), "mysql", "mariadb"
        )
        self._table = sa.Table(
            "rowcast_checkpoint",
            sa.MetaData(),
            sa.Column("name", key, primary_key=True),
            sa.Column("position", text, nullable=False),
            sa.Column("updated_at", sa.Double(), nullable=False),  # UTC epoch seconds
            mysql_charset="utf8mb4",
        )
        self._errors = sa.exc.SQLAlchemyError
        try:
            self._table.create(self._engine, checkfirst=True)
        except self._errors as e:
            with contextlib.suppress(self._errors):  # another process created it meanwhile?
                if sa.inspect(self._engine).has_table(self._table.name):
                    return
            self._engine.dispose()
            self._fail("creating table rowcast_checkpoint", e)

    def _load(self) -> str | None:
        query = self._table.select().where(self._table.c.name == self.name)
        try:
            with self._engine.connect() as conn:
                row = conn.execute(query).first()
        except self._errors as e:
            self._fail("load", e)
        return None if row is None else str(row.position)

    def _save(self, position: str) -> None:
        from sqlalchemy.dialects import mysql, postgresql, sqlite

        values = {"name": self.name, "position": position, "updated_at": time.time()}
        statement: Any
        if self._engine.dialect.name in ("mysql", "mariadb"):
            my = mysql.insert(self._table).values(values)
            statement = my.on_duplicate_key_update(
                position=my.inserted.position, updated_at=my.inserted.updated_at
            )
        else:
            dialect = sqlite if self._engine.dialect.name == "sqlite" else postgresql
            pg = dialect.insert(self._table).values(values)
            statement = pg.on_conflict_do_update(
                index_elements=[self._table.c.name],
                set_={"position": pg.excluded.position, "updated_at": pg.excluded.updated_at},
            )
        try:
            with self._engine.begin() as conn:
                conn.execute(statement)
        except self._errors as e:
            self._fail("save", e)

    def _close(self) -> None:
        self._engine.dispose()


class RedisCheckpoint(_Base):
    """A Redis hash ``rowcast:checkpoint:<name>`` with ``position`` and ``updated_at``.

    A save is durable only as far as the server persists (RDB snapshots, AOF
    with ``appendfsync``): a Redis without persistence forgets every
    checkpoint when it restarts.
    """

    def __init__(self, url: str, name: str = "default") -> None:
        super().__init__(url, name)
        try:
            import redis
        except ImportError as e:
            raise ConfigError(
                f"a Redis checkpoint needs redis-py: pip install 'rowcast[redis]' ({e})"
            ) from e
        self.key = f"rowcast:checkpoint:{name}"
        self._errors = redis.RedisError
        try:
            if not re.fullmatch(r"/?\d*", urlsplit(url).path):  # redis-py would use db 0
                raise ValueError("the path is the database number: redis://host:6379/0")
            self._client = redis.Redis.from_url(
                _without_query_name(url), decode_responses=True, socket_connect_timeout=10
            )
        except ValueError as e:
            raise ConfigError(f"malformed Redis URL {self.url}: {e}") from e
        try:
            self._client.ping()
        except self._errors as e:
            self._client.close()
            self._fail("connect", e)

    def _load(self) -> str | None:
        try:
            record: dict[str, str] = self._client.hgetall(self.key)  # type: ignore[assignment]
        except self._errors as e:
            self._fail("load", e)
        if not record:
            return None
        position = record.get("position")
        if not position:
            raise StoreError(
                f"checkpoint {self.name!r} at {self.url}: key {self.key!r} has no position "
                f"(fields {sorted(record)}); delete the key to start over"
            )
        return position

    def _save(self, position: str) -> None:
        try:
            self._client.hset(self.key, mapping={"position": position, "updated_at": time.time()})
        except self._errors as e:
            self._fail("save", e)

    def _close(self) -> None:
        self._client.close()


def _without_query_name(url: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "name"]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f"a checkpoint name is 1-200 characters of A-Z a-z 0-9 _ . - starting with a "
            f"letter or digit, not {name!r}"
        )
    return name


def open_checkpoint(url: str, name: str = "default") -> Checkpoint:
    """Open the checkpoint `name` at `url` (see the module docstring for URLs and errors)."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"a checkpoint URL is a non-empty string ({_SCHEMES}), not {url!r}")
    _check_name(name)
    if "://" not in url:
        return FileCheckpoint(url, url, name)
    parts = urlsplit(url)
    names = [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if k == "name"]
    if names:
        if len(names) > 1 or (name != "default" and names[0] != name):
            raise ConfigError(
                f"checkpoint {masked(url)} names {names!r} in its URL but "
                f"{name!r} was asked for; give the name once"
            )
        name = _check_name(names[0])
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"{url}: a file URL has no host; write file:///abs/path")
        return FileCheckpoint(url, unquote(parts.path), name)
    if scheme in ("redis", "rediss"):
        return RedisCheckpoint(url, name)
    return SQLCheckpoint(url, name)
