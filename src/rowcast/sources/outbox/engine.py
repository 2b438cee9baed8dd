"""The database an outbox source reads: ``outbox+<SQLAlchemy URL>`` as an engine.

Bare schemes get rowcast's drivers; the URL's query options are checked against the
driver's (a typo is named); a SQLite outbox is read from a file that exists (never
made); a read-only engine (``rowcast doctor``) refuses every write.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ..._url import check_query, masked, pairs
from ...backends import missing_extra
from ...errors import ConfigError
from ..sqlite.file import read_only_uri

__all__ = ["engine"]

_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
}
_EXTRAS = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}


def engine(url: str, *, read_only: bool = False) -> sa.Engine:
    """An engine for ``outbox+<sqlalchemy url>`` (bare schemes get rowcast's drivers);
    `read_only`: every session refuses writes (a SQLite file is opened read-only)."""
    scheme, plus, rest = url.partition("+")
    if scheme.lower() != "outbox" or not plus or "://" not in rest:
        raise ConfigError(
            f"not an outbox URL: {masked(url)!r}; write outbox+ before the app's database "
            "URL, e.g. outbox+postgresql://user@host/db or outbox+sqlite:///app.db"
        )
    try:
        target = sa.make_url(rest)
        target = target.set(drivername=_DRIVERS.get(target.drivername, target.drivername))
        backend = target.get_backend_name()
        check_query(
            url, pairs(target.query), backend.replace("mariadb", "mysql"), "an outbox source"
        )
        if backend == "sqlite":
            _existing_file(url, target.database or "")
        if backend in ("mysql", "mariadb") and "charset" not in target.query:
            target = target.update_query_dict({"charset": "utf8mb4"})
        if read_only and backend == "sqlite" and target.database:
            path = str(Path(target.database).expanduser().absolute())
            target = target.set(database=read_only_uri(path)).update_query_dict({"uri": "true"})
        made = sa.create_engine(target, pool_pre_ping=True)
        if read_only and backend != "sqlite":
            statement = _READ_ONLY.get(
                backend, "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"
            )
            sa.event.listen(made, "connect", lambda dbapi, _: _run(dbapi, statement))
        return made
    except ConfigError:
        raise
    except (sa.exc.NoSuchModuleError, ImportError) as e:
        extra = _EXTRAS.get(rest.split(":", 1)[0].split("+", 1)[0])
        raise missing_extra(extra, masked(url), e) from e
    except (sa.exc.ArgumentError, ValueError, TypeError) as e:
        raise ConfigError(f"malformed outbox URL {masked(url)}: {e}") from e


_READ_ONLY = {
    "mysql": "SET SESSION TRANSACTION READ ONLY",
    "mariadb": "SET SESSION TRANSACTION READ ONLY",
}


def _run(dbapi_connection: Any, statement: str) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(statement)
    finally:
        cursor.close()
    dbapi_connection.commit()


def _existing_file(url: str, database: str) -> None:
    """A SQLite outbox is read from the app's database: a file that exists (never made)."""
    if database in ("", ":memory:") or database.startswith("file:"):
        return
    file = Path(database).expanduser().absolute()
    if file.is_dir():
        raise ConfigError(f"{masked(url)} names the directory {str(file)!r}; give a database file")
    if not file.exists():
        raise ConfigError(
            f"no SQLite database at {str(file)!r} ({masked(url)}): the file does not exist; "
            "the outbox is read from the app's database (check the path; sqlite:////abs/path)"
        )
