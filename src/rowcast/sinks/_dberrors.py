"""Which database errors pass (transient) and which never will (permanent), for SQL sinks.

PEP 249's tree is the first answer, as eventsourcing reads it: ``OperationalError``
and ``InterfaceError`` are the connection or the server (transient);
``ProgrammingError``, ``IntegrityError``, ``DataError`` and ``NotSupportedError``
are the statement or the data (permanent). Drivers put some errors on the other
branch (pymysql calls a refused privilege an ``OperationalError``, sqlite3 a
missing table one too), so the driver's own code decides first where it has one:
PostgreSQL's SQLSTATE, MySQL's error number, SQLite's result code.
"""

from __future__ import annotations

from typing import Final

from ..errors import PermanentSinkError, SinkError, TransientSinkError

__all__ = ["describe", "driver_error", "fix_of", "kind_of", "sink_error"]

# SQLSTATE classes (the first two characters) and codes of errors that pass
_PG_TRANSIENT_CLASSES: Final = frozenset({"08", "40", "53", "57", "58", "XX"})
_PG_TRANSIENT_CODES: Final = frozenset(
    {"55P03", "55006", "25006", "25P02", "25P03"}  # lock not available, in use, read only...
)
# MySQL / MariaDB server error numbers that pass; client errors (2000-2999) all do
_MYSQL_TRANSIENT: Final = frozenset(
    {
        1021,  # disk full
        1037,  # out of memory
        1038,  # out of sort memory
        1040,  # too many connections
        1041,  # out of resources
        1053,  # server shutdown in progress
        1114,  # the table is full
        1129,  # host blocked
        1152,  # aborted connection
        1158,  # network read error
        1159,  # network read timeout
        1160,  # network write error
        1161,  # network write timeout
        1180,  # error during commit
        1181,  # error during rollback
        1205,  # lock wait timeout
        1213,  # deadlock
        1290,  # --read-only (a replica during a failover)
        1317,  # query interrupted
        1836,  # read-only mode
        1927,  # connection killed (MariaDB)
        3024,  # max execution time exceeded
        4031,  # disconnected for inactivity (MariaDB)
    }
)
# SQLite primary result codes that pass: busy, locked, no memory, I/O, full, cannot open,
# protocol, schema changed
_SQLITE_TRANSIENT: Final = frozenset({5, 6, 7, 10, 13, 14, 15, 17})
_PEP249_TRANSIENT: Final = frozenset({"OperationalError", "InterfaceError"})
_PEP249_PERMANENT: Final = frozenset(
    {"ProgrammingError", "IntegrityError", "DataError", "NotSupportedError"}
)


def driver_error(error: BaseException) -> BaseException:
    """The driver's own error under `error`: SQLAlchemy's ``orig``, or the first
    ``__cause__`` down the chain that is not rowcast's or SQLAlchemy's."""
    seen: BaseException | None = error
    while seen is not None:
        orig = getattr(seen, "orig", None)
        if isinstance(orig, BaseException):
            return orig
        module = type(seen).__module__
        if not module.startswith(("rowcast", "sqlalchemy")):
            return seen
        seen = seen.__cause__
    return error


def describe(error: BaseException) -> str:
    """The driver's own words for `error`: its first line, without SQLAlchemy's statement,
    parameters and link."""
    lines = str(driver_error(error)).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def kind_of(error: BaseException) -> type[SinkError]:
    """`TransientSinkError` or `PermanentSinkError`: what a database `error` is.

    `error` may be the driver's, or one that carries it (SQLAlchemy's ``DBAPIError``,
    a `rowcast.errors.StoreError` raised from it). Unknown errors are transient:
    retrying one loses nothing.
    """
    if getattr(error, "connection_invalidated", False):  # SQLAlchemy: the connection died
        return TransientSinkError
    orig = driver_error(error)
    number = _mysql_number(orig)  # first: MySQL's SQLSTATEs are too coarse (HY000...)
    if number is not None:
        transient = number in _MYSQL_TRANSIENT or 2000 <= number < 3000
        return TransientSinkError if transient else PermanentSinkError
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if isinstance(state, str) and len(state) == 5:
        if state[:2] in _PG_TRANSIENT_CLASSES or state in _PG_TRANSIENT_CODES:
            return TransientSinkError
        return PermanentSinkError
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int):
        return TransientSinkError if code & 0xFF in _SQLITE_TRANSIENT else PermanentSinkError
    names = {cls.__name__ for cls in type(orig).__mro__}
    if names & _PEP249_PERMANENT:
        return PermanentSinkError
    if names & _PEP249_TRANSIENT:
        return TransientSinkError
    # SQLAlchemy's own refusals (a statement it cannot compile, an unknown column)
    if names & {"CompileError", "ArgumentError", "NoSuchColumnError", "NoSuchTableError"}:
        return PermanentSinkError
    return TransientSinkError


# what to change, by SQLSTATE (or its class) and by MySQL error number
_PG_FIXES: Final = {
    "42501": "grant the user what the sink needs: INSERT, UPDATE, DELETE (and SELECT) on "
    "the target tables, USAGE and CREATE on the schema",
    "42703": "the target table lacks a column the changes carry: add it (ALTER TABLE ... "
    "ADD COLUMN), or drop the table for the sink to create it again",
    "42P01": "create the target table, or let the sink create it (create=true)",
    "3F000": "create the target schema (CREATE SCHEMA ...)",
    "22": "a value does not fit the target column's type: change the column's type to "
    "match the source's",
    "23": "a target table's constraint refuses the row: drop or change the constraint",
    "28": "give a user and password the database accepts",
}
_MYSQL_FIXES: Final = {
    1142: _PG_FIXES["42501"],
    1044: _PG_FIXES["42501"],
    1045: _PG_FIXES["28"],
    1054: _PG_FIXES["42703"],
    1146: _PG_FIXES["42P01"],
    1049: "create the target database",
    1264: _PG_FIXES["22"],
    1366: _PG_FIXES["22"],
    1406: _PG_FIXES["22"],
}


def _mysql_number(orig: BaseException) -> int | None:
    """The server or client error number of a MySQL driver's error, else None."""
    if not type(orig).__module__.startswith(("pymysql", "MySQLdb")) or not orig.args:
        return None
    number = orig.args[0]
    return number if isinstance(number, int) and number >= 1000 else None


def fix_of(error: BaseException) -> str | None:
    """What to change for a permanent database `error`, when it is a common one."""
    orig = driver_error(error)
    number = _mysql_number(orig)
    if number is not None:
        return _MYSQL_FIXES.get(number)
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if isinstance(state, str):
        return _PG_FIXES.get(state) or _PG_FIXES.get(state[:2])
    text = str(orig).lower()
    if "no such table" in text:
        return _PG_FIXES["42P01"]
    if "has no column" in text or "no such column" in text:
        return _PG_FIXES["42703"]
    if "readonly" in text or "read-only" in text:
        return "make the database file writable by this user"
    return None


def sink_error(error: BaseException, message: str) -> SinkError:
    """`message` about the database `error`, as the kind of `SinkError` it is (with a fix)."""
    kind = kind_of(error)
    if kind is PermanentSinkError:
        return PermanentSinkError(message, fix_of(error))
    return kind(message)
