"""Talking to a PostgreSQL server as a logical replication client: URL and connections.

Private to `rowcast.sources.postgres` and ``rowcast doctor``. A source URL is
a libpq URL plus rowcast's own query options::

    postgresql://user:password@host:5432/db?slot=rowcast&publication=rowcast&tables=shop.*

Every other query parameter (``sslmode``, ``connect_timeout``, ...) goes to
libpq as it is. Connection failures become `ConfigError` (or `Unreachable`,
a `ConfigError` worth retrying) whose message says what to check.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..._url import check_query, masked
from ...backends import missing_extra
from ...errors import ConfigError

__all__ = [
    "OPTIONS",
    "PgURL",
    "Unreachable",
    "check_name",
    "connect",
    "connect_reader",
    "parse_url",
    "psycopg2",
]

OPTIONS = ("slot", "publication", "tables", "start", "replica_identity")  # rowcast's, not libpq's
_NAME = re.compile(r"[a-z0-9_]{1,63}")  # what the server accepts as a slot name
# the session the server writes row values in: what the psycopg 3 loaders read
_SESSION = "-c DateStyle=ISO -c IntervalStyle=postgres -c TimeZone=UTC -c extra_float_digits=3"


class Unreachable(ConfigError):
    """The server did not answer (down, restarting, wrong host): worth another try."""


def psycopg2() -> Any:
    """The psycopg2 package with its extras, or the `ConfigError` naming the extra."""
    try:
        import psycopg2
        import psycopg2.errors
        import psycopg2.extensions
        import psycopg2.extras
        import psycopg2.sql
    except ImportError as e:  # pragma: no cover - the extra is installed in tests
        raise missing_extra("postgres", "reading PostgreSQL", e) from e
    return psycopg2


@dataclasses.dataclass(frozen=True)
class PgURL:
    """What a ``postgresql://`` source URL says."""

    masked: str  #: the URL without its query, password masked: fit to print
    params: dict[str, str]  #: libpq connection parameters
    options: dict[str, str]  #: rowcast's own options from the query

    @property
    def user(self) -> str:
        return self.params.get("user", "")

    @property
    def database(self) -> str:
        return self.params.get("dbname", "")

    def connect_kwargs(self, replication: bool) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"connect_timeout": "5", "application_name": "rowcast"}
        kwargs.update(self.params)
        kwargs["options"] = f"{kwargs.get('options', '')} {_SESSION}".strip()
        if replication:
            kwargs["connection_factory"] = psycopg2().extras.LogicalReplicationConnection
        return kwargs


def parse_url(url: str) -> PgURL:
    """Parse a postgresql:// or postgres:// URL, with a clear error when it is malformed."""
    parts = urlsplit(url)
    if parts.scheme.split("+", 1)[0].lower() not in {"postgresql", "postgres"}:
        raise ConfigError(
            f"not a PostgreSQL URL: {masked(url)!r} (expected postgresql://user@host/db)"
        )
    try:
        parts.port  # noqa: B018 - validates it
    except ValueError as e:
        raise ConfigError(f"{masked(url)!r} has a bad port: {e}") from e
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = {k: v for k, v in query if k in OPTIONS}
    check_query(url, [(k, v) for k, v in query if k not in OPTIONS], "postgresql",
                "a PostgreSQL source", OPTIONS)  # fmt: skip
    libpq = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(
        [(k, v) for k, v in query if k not in OPTIONS]
    ), ""))  # fmt: skip
    shown = masked(urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")))
    pg = psycopg2()
    try:
        params = pg.extensions.parse_dsn(libpq)
    except pg.ProgrammingError as e:
        known = ", ".join(OPTIONS)
        raise ConfigError(
            f"{shown}: {str(e).strip()} (rowcast's own options are {known}; others go to libpq)"
        ) from e
    if not params.get("dbname"):
        raise ConfigError(f"{shown} names no database: write postgresql://user@host:5432/db")
    for name in ("slot", "publication"):
        check_name(name, options.get(name, "rowcast"))
    return PgURL(shown, params, options)


def check_name(kind: str, value: str) -> str:
    """`value` if it is a valid slot (or publication) name, else a `ConfigError`."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ConfigError(f"{kind}={value!r}: a {kind} name is 1-63 characters of a-z, 0-9 and _")
    return value


def connect(url: PgURL, *, replication: bool = False) -> Any:
    """A psycopg2 connection (autocommit), or a `ConfigError` saying why there is none."""
    pg = psycopg2()
    try:
        conn = pg.connect(**url.connect_kwargs(replication))
    except pg.OperationalError as e:
        raise _connect_error(url, e) from e
    if not replication:
        conn.autocommit = True
    return conn


def connect_reader(url: PgURL) -> Any:
    """A psycopg 3 connection in ``READ COMMITTED, READ ONLY`` transactions (ended by the
    caller), or a `ConfigError` saying why there is none: what reads rows into results
    the stream's loaders take whole (``Transformer.load_rows``)."""
    try:
        import psycopg
    except ImportError as e:  # pragma: no cover - the extra is installed in tests
        raise missing_extra("postgres", "reading PostgreSQL", e) from e
    try:
        conn = psycopg.connect(**url.connect_kwargs(False))
    except psycopg.OperationalError as e:
        raise _connect_error(url, e) from e
    conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
    conn.read_only = True
    return conn


def _connect_error(url: PgURL, error: Exception) -> ConfigError:
    text = str(error).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    lower = text.lower()
    user = url.user or "(the default user)"
    if "password authentication failed" in lower or ("role" in lower and "does not exist" in lower):
        return ConfigError(
            f"{url.masked}: access denied for user {user!r}: check the user and password in the "
            f"URL ({first})"
        )
    if "database" in lower and "does not exist" in lower:
        return ConfigError(f"{url.masked}: {first}: check the database name in the URL")
    if "replication" in lower and ("superuser" in lower or "permission" in lower):
        return ConfigError(
            f"{url.masked}: {first}: the user needs the replication privilege: "
            f"ALTER ROLE {user} REPLICATION;"
        )
    if "max_wal_senders" in lower or "too many clients" in lower:
        return Unreachable(f"{url.masked}: the server refused the connection: {first}")
    if any(
        s in lower
        for s in (
            "could not connect",
            "connection refused",
            "timeout expired",
            "could not translate host",
            "no such file or directory",
            "starting up",
            "shutting down",
            "server closed the connection",
            "connection to server",
        )
    ):
        return Unreachable(
            f"{url.masked}: cannot reach the server ({first}): is it running, and listening "
            "where the URL says?"
        )
    return ConfigError(f"{url.masked}: cannot connect: {first}")
