"""`SQLCheckpoint`: a checkpoint in a row of any database SQLAlchemy reaches."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from ..backends import missing_extra
from ..errors import ConfigError
from .base import BaseCheckpoint

__all__ = ["SQLCheckpoint"]

_DRIVERS = {  # bare schemes -> the drivers rowcast's extras install
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
}
_EXTRAS = {"sqlite": None, "postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}


class SQLCheckpoint(BaseCheckpoint):
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
        if backend not in _EXTRAS:
            raise ConfigError(
                f"no SQL checkpoint for {self.url}; use sqlite://, postgresql://, mysql://"
            )
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
            raise missing_extra(_EXTRAS[backend], f"checkpoint {self.url}", e) from e
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
