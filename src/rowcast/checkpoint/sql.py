"""`SQLCheckpoint`: a checkpoint in a row of any database SQLAlchemy reaches."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

from .._url import check_query, made_directory, masked, pairs
from ..backends import missing_extra
from ..errors import ConfigError, StoreError
from .base import BaseCheckpoint, parse_report, reason

__all__ = ["SQLCheckpoint"]

_DRIVERS = {  # bare schemes -> the drivers rowcast's extras install
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
}
_EXTRAS = {"sqlite": None, "postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}
_PORTS = {"postgresql": 5432, "mysql": 3306}
_FAMILY = {"sqlite": "sqlite", "postgresql": "postgresql", "mysql": "mysql", "mariadb": "mysql"}


def _sqlite_file(url: str, file: Path) -> None:
    """Make sure `file` can be a SQLite database: not a directory, its directory made."""
    if file.is_dir():
        raise ConfigError(
            f"checkpoint {url}: {str(file)!r} is a directory; give a file in it, e.g. "
            f"sqlite:///{file / 'relay.db'}"
        )
    made_directory(f"checkpoint {url}", file.parent)
    if not os.access(file.parent, os.W_OK) or (file.exists() and not os.access(file, os.W_OK)):
        raise ConfigError(
            f"checkpoint {url}: this user cannot write {str(file)!r} (nor the journal "
            "beside it); give a path in a directory this user can write"
        )


class SQLCheckpoint(BaseCheckpoint):
    """A row of table ``rowcast_checkpoint`` in any database SQLAlchemy reaches.

    SQLite, PostgreSQL and MySQL/MariaDB. The table is created when missing; each
    save is one upsert (``ON CONFLICT`` / ``ON DUPLICATE KEY``), safe under
    concurrency, in its own committed transaction. Reports
    (`rowcast.checkpoint.report`) are rows of ``rowcast_report``, created at the
    first report (a user who may not create it has no report, and a warning).
    """

    def __init__(self, url: str, name: str = "default") -> None:
        super().__init__(url, name)
        import sqlalchemy as sa

        self._engine = _engine(url, self.url)
        self._table = _checkpoint_table()
        self._reports = _report_table()
        self._report_table_made = False
        self._errors = sa.exc.SQLAlchemyError
        try:
            with self._engine.connect():
                pass
        except self._errors as e:
            self._engine.dispose()
            raise StoreError(
                f"checkpoint {self.name!r} at {self.url}: cannot connect ({reason(e)}): is the "
                "server running, and are the URL's host, port, user, password and database "
                "right?"
            ) from e
        try:
            self._table.create(self._engine, checkfirst=True)
        except self._errors as e:
            with contextlib.suppress(self._errors):  # another process created it meanwhile?
                if sa.inspect(self._engine).has_table(self._table.name):
                    return
            self._engine.dispose()
            self._fail("creating table rowcast_checkpoint", e)

    @classmethod
    def read_reports(cls, url: str, name: str | None = None) -> list[dict[str, Any]]:
        """The rows of ``rowcast_report`` at `url` (`name`'s only, when given); creates
        nothing: no table, no SQLite file."""
        import sqlalchemy as sa

        shown = masked(url)
        try:
            target = sa.make_url(url)
        except (sa.exc.ArgumentError, ValueError) as e:
            raise ConfigError(f"malformed database URL {shown}: {e}") from e
        family = _FAMILY.get(target.get_backend_name())
        if family is not None:  # a typo is an error even where nothing reported yet
            mine = target.difference_update_query(["name"]).query
            check_query(url, pairs(mine), family, "a SQL checkpoint", ("name",))
        if target.get_backend_name() == "sqlite":
            database = target.database or ""
            if not database.startswith("file:") and not Path(database).expanduser().exists():
                return []
        engine = _engine(url, shown)
        table = _report_table()
        query = table.select()
        if name is not None:
            query = query.where(table.c.name == name)
        try:
            conn = engine.connect()
        except sa.exc.SQLAlchemyError as e:
            engine.dispose()
            if family not in _PORTS:
                raise StoreError(f"reading reports at {shown} failed: {reason(e)}") from e
            where = f"{target.host or 'localhost'}:{target.port or _PORTS[family]}"
            raise StoreError(
                f"reading reports at {shown}: cannot reach the server ({reason(e)}): is it "
                f"running, and listening on {where}? (and are the URL's user, password and "
                "database right?)"
            ) from e
        try:
            with conn:
                if not sa.inspect(conn).has_table(table.name):
                    return []
                rows = conn.execute(query).all()
        except sa.exc.SQLAlchemyError as e:
            raise StoreError(f"reading reports at {shown} failed: {e}") from e
        finally:
            engine.dispose()
        return [parse_report(row.report, f"{shown} (rowcast_report {row.name!r})") for row in rows]

    def _load(self) -> str | None:
        query = self._table.select().where(self._table.c.name == self.name)
        try:
            with self._engine.connect() as conn:
                row = conn.execute(query).first()
        except self._errors as e:
            self._fail("load", e)
        return None if row is None else str(row.position)

    def _save(self, position: str) -> None:
        values = {"name": self.name, "position": position, "updated_at": time.time()}
        try:
            with self._engine.begin() as conn:
                conn.execute(self._upsert(self._table, values, ("position", "updated_at")))
        except self._errors as e:
            self._fail("save", e)

    def _save_report(self, text: str) -> None:
        if not self._report_table_made:
            import sqlalchemy as sa

            made = False
            try:
                self._reports.create(self._engine, checkfirst=True)
            except self._errors as e:
                with contextlib.suppress(self._errors):
                    made = sa.inspect(self._engine).has_table(self._reports.name)
                if not made:  # else another process created it meanwhile
                    self._fail("creating table rowcast_report", e)
            self._report_table_made = True
        values = {"name": self.name, "report": text, "updated_at": time.time()}
        try:
            with self._engine.begin() as conn:
                conn.execute(self._upsert(self._reports, values, ("report", "updated_at")))
        except self._errors as e:
            self._fail("saving the report", e)

    def _upsert(self, table: Any, values: dict[str, Any], columns: tuple[str, ...]) -> Any:
        """INSERT `values` into `table`, or update `columns` of the row of its name."""
        from sqlalchemy.dialects import mysql, postgresql, sqlite

        if self._engine.dialect.name in ("mysql", "mariadb"):
            my = mysql.insert(table).values(values)
            return my.on_duplicate_key_update({c: my.inserted[c] for c in columns})
        dialect = sqlite if self._engine.dialect.name == "sqlite" else postgresql
        pg = dialect.insert(table).values(values)
        return pg.on_conflict_do_update(
            index_elements=[table.c.name], set_={c: pg.excluded[c] for c in columns}
        )

    def _close(self) -> None:
        self._engine.dispose()


def _key() -> Any:
    import sqlalchemy as sa
    from sqlalchemy.dialects import mysql

    return sa.String(200).with_variant(
        mysql.VARCHAR(200, collation="utf8mb4_bin"), "mysql", "mariadb"
    )


def _text() -> Any:
    import sqlalchemy as sa
    from sqlalchemy.dialects import mysql

    return sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")


def _checkpoint_table() -> Any:
    import sqlalchemy as sa

    return sa.Table(
        "rowcast_checkpoint",
        sa.MetaData(),
        sa.Column("name", _key(), primary_key=True),
        sa.Column("position", _text(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),  # UTC epoch seconds
        mysql_charset="utf8mb4",
    )


def _report_table() -> Any:
    import sqlalchemy as sa

    return sa.Table(
        "rowcast_report",
        sa.MetaData(),
        sa.Column("name", _key(), primary_key=True),
        sa.Column("report", _text(), nullable=False),  # JSON: rowcast.checkpoint.report
        sa.Column("updated_at", sa.Double(), nullable=False),
        mysql_charset="utf8mb4",
    )


def _engine(url: str, shown: str) -> Any:
    """An engine for `url` (shown as `shown` in errors), with rowcast's drivers."""
    import sqlalchemy as sa

    try:
        target = sa.make_url(url).difference_update_query(["name"])
        scheme = target.drivername
        target = target.set(drivername=_DRIVERS.get(scheme, scheme))
        backend = target.get_backend_name()
    except (sa.exc.ArgumentError, ValueError) as e:
        raise ConfigError(f"malformed database URL {shown}: {e}") from e
    if backend not in _EXTRAS:
        raise ConfigError(f"no SQL checkpoint for {shown}; use sqlite://, postgresql://, mysql://")
    check_query(url, pairs(target.query), _FAMILY[backend], "a SQL checkpoint", ("name",))
    if backend == "sqlite":
        database = target.database or ""
        if database in ("", ":memory:") or "mode=memory" in database:
            raise ConfigError(f"{shown} is lost at exit; use sqlite:///path/to/file.db")
        if not database.startswith("file:"):
            _sqlite_file(shown, Path(database).expanduser().absolute())
    elif backend in ("mysql", "mariadb") and "charset" not in target.query:
        target = target.update_query_dict({"charset": "utf8mb4"})
    try:
        return sa.create_engine(target, pool_pre_ping=True)
    except (sa.exc.NoSuchModuleError, ImportError) as e:
        raise missing_extra(_EXTRAS[backend], f"checkpoint {shown}", e) from e
    except (sa.exc.ArgumentError, ValueError, TypeError) as e:
        raise ConfigError(f"malformed database URL {shown}: {e}") from e
