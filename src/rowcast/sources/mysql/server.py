"""Talking to a MySQL / MariaDB server as a replication client: URL, connection, checks.

Private to `rowcast.sources.mysql` and ``rowcast doctor``. Every problem a
check finds comes with the statement or configuration line that fixes it.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ..._url import masked, unknown_option
from ...backends import missing_extra
from ...errors import ConfigError
from ..base import Check

__all__ = [
    "OPTIONS",
    "Check",
    "ServerURL",
    "Unreachable",
    "connect",
    "diagnose",
    "is_connection_error",
    "parse_url",
    "pymysql_connect",
    "server_code",
]

OPTIONS = ("tables", "server_id", "start", "read_default_file")  # a binlog source's


class Unreachable(ConfigError):
    """The server did not answer (down, restarting, wrong host): worth another try."""


def _pymysql() -> Any:
    try:
        import pymysql
    except ImportError as e:  # pragma: no cover - the extra is installed in tests
        raise missing_extra("mysql", "reading a MySQL/MariaDB binlog", e) from e
    return pymysql


@dataclasses.dataclass(frozen=True)
class ServerURL:
    """What a ``mysql://user:password@host:port/db?option=...`` URL says.

    ``?read_default_file=~/.my.cnf`` has PyMySQL read the user and password (those the
    URL leaves out) from that option file's ``[client]`` group, as the mysql client does.
    """

    host: str
    port: int
    user: str
    password: str = dataclasses.field(repr=False)
    database: str | None
    options: dict[str, str]

    @property
    def masked(self) -> str:
        db = f"/{self.database}" if self.database else ""
        # no user: the option file's; a password only when there is one to hide
        who = f"{self.user}{':***' if self.password else ''}@" if self.user else ""
        return f"mysql://{who}{self.host}:{self.port}{db}"

    def settings(self) -> dict[str, Any]:
        """Connection settings for pymysql and python-mysql-replication."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "connect_timeout": 5,
            **({"read_default_file": self.option_file} if self.option_file else {}),
        }

    @property
    def option_file(self) -> str | None:
        """The option file PyMySQL reads what the URL leaves out from, if any."""
        path = self.options.get("read_default_file")
        return os.path.expanduser(path) if path else None


def parse_url(url: str) -> ServerURL:
    """Parse a mysql:// or mariadb:// URL, with a clear error when it is malformed."""
    parts = urlsplit(url)
    if parts.scheme.split("+", 1)[0] not in {"mysql", "mariadb"}:
        raise ConfigError(
            f"not a MySQL/MariaDB URL: {masked(url)!r} (expected mysql://user@host/db)"
        )
    if not parts.hostname:
        raise ConfigError(
            f"{masked(url)!r} names no host: write mysql://user:password@host:3306/db"
        )
    try:
        port = parts.port or 3306
    except ValueError as e:
        raise ConfigError(f"{masked(url)!r} has a bad port: {e}") from e
    options = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    for name, value in options.items():
        if name not in OPTIONS:
            raise unknown_option(url, name, value, "a MySQL/MariaDB source", OPTIONS)
    option_file = options.get("read_default_file")
    if option_file and not os.path.isfile(os.path.expanduser(option_file)):
        raise ConfigError(
            f"{masked(url)}: read_default_file names no file: {option_file!r} (an option "
            "file such as ~/.my.cnf, with user and password under [client])"
        )
    # without a user in the URL: the option file's, else root
    default_user = "" if option_file else "root"
    return ServerURL(
        host=parts.hostname,
        port=port,
        user=unquote(parts.username or default_user),
        password=unquote(parts.password or ""),
        database=parts.path.lstrip("/") or None,
        options=options,
    )


def connect(url: ServerURL, conv: dict[Any, Any] | None = None) -> Any:
    """A pymysql connection (its conversions `conv`, None: pymysql's), or a `ConfigError`
    saying why there is none."""
    pymysql = _pymysql()
    try:
        conn = _connected(
            pymysql, {**url.settings(), "autocommit": True, "charset": "utf8mb4", "conv": conv}
        )
    except pymysql.err.OperationalError as e:
        code = e.args[0] if e.args else None
        if code == 1045:
            raise ConfigError(
                f"{url.masked}: access denied for user {url.user!r}: check the user and "
                "password in the URL"
            ) from e
        if code in {2002, 2003, 2005, 2006, 2013}:
            raise Unreachable(
                f"{url.masked}: cannot reach the server ({e.args[-1]}): is it running, and "
                f"listening on {url.host}:{url.port}?"
            ) from e
        raise ConfigError(f"{url.masked}: cannot connect: {e}") from e
    return conn


_PRIVILEGES = {
    "REPLICATION SLAVE": ("REPLICATION SLAVE", "REPLICATION REPLICA"),
    "REPLICATION CLIENT": ("REPLICATION CLIENT", "BINLOG MONITOR"),
}


def diagnose(conn: Any, user: str) -> list[Check]:
    """Every server setting and privilege a binlog source needs, checked."""
    with conn.cursor() as cur:
        cur.execute(
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN "
            "('log_bin', 'binlog_format', 'binlog_row_image', 'binlog_row_metadata', "
            "'server_id', 'version')"
        )
        variables = {str(k).lower(): str(v) for k, v in cur.fetchall()}
        cur.execute("SHOW GRANTS FOR CURRENT_USER()")
        grants = [str(row[0]) for row in cur.fetchall()]
    return check_settings(variables, grants, user)


def check_settings(variables: dict[str, str], grants: list[str], user: str) -> list[Check]:
    """The checks of `diagnose`, from the server's variables and the user's grants."""

    def setting(name: str, want: str, fix: str) -> Check:
        value = variables.get(name, "(not set)")
        return Check(name, value.upper() == want, value, "" if value.upper() == want else fix)

    checks = [
        setting(
            "log_bin",
            "ON",
            "add `log_bin = mysql-bin` and `server_id = 1` under [mysqld] in my.cnf and "
            "restart the server (scripts/services.sh does it)",
        ),
        setting(
            "binlog_format",
            "ROW",
            "SET GLOBAL binlog_format = 'ROW'; and `binlog_format = ROW` in my.cnf",
        ),
        setting(
            "binlog_row_image",
            "FULL",
            "SET GLOBAL binlog_row_image = 'FULL'; and `binlog_row_image = FULL` in my.cnf",
        ),
    ]
    if "binlog_row_metadata" in variables:
        checks.append(
            setting(
                "binlog_row_metadata",
                "FULL",
                "SET GLOBAL binlog_row_metadata = 'FULL'; and `binlog_row_metadata = FULL` in "
                "my.cnf (without it the binlog carries no column names)",
            )
        )
    else:
        checks.append(
            Check(
                "binlog_row_metadata",
                False,
                f"(not supported by {variables.get('version', 'this server')})",
                "use MySQL 8.0.14+ or MariaDB 10.5+, which can log column names",
            )
        )
    granted = " ".join(g.upper() for g in grants if " ON *.* " in g.upper())
    for privilege, names in _PRIVILEGES.items():
        ok = "ALL PRIVILEGES" in granted or any(re.search(rf"\b{n}\b", granted) for n in names)
        checks.append(
            Check(
                f"privilege {privilege}",
                ok,
                "granted" if ok else "missing",
                "" if ok else f"GRANT {privilege} ON *.* TO {user!r}@'%';",
            )
        )
    return checks


def pymysql_connect(**settings: Any) -> Any:
    """pymysql.connect, with the library's deprecated ``db=`` spelled ``database=``, and
    PyMySQL's "TLS if the server offers it" context made once (`_connected`)."""
    if "db" in settings:
        settings["database"] = settings.pop("db")
    return _connected(_pymysql(), settings)


_PREFERRED: list[Any] = []  # the TLS context PyMySQL makes for a connection without ssl options


def _connected(pymysql: Any, settings: dict[str, Any]) -> Any:
    """``pymysql.connect(**settings)``. Given no TLS option (nor an option file, which may
    hold some), PyMySQL makes a default TLS context for each connection, to use if the
    server offers TLS: loading the system's certificates takes tens of milliseconds, for
    each of the three or four connections a source opens. The same context is made once
    here and handed to each such connection, which then connects as PyMySQL would."""
    own = any(k.startswith("ssl") or k in ("read_default_file", "defer_connect") for k in settings)
    if own or not getattr(pymysql.connections, "SSL_ENABLED", False):
        return pymysql.connect(**settings)
    conn = pymysql.connect(**settings, ssl_disabled=True, defer_connect=True)
    if not all(hasattr(conn, n) for n in ("ssl", "_ssl_required", "_create_ssl_ctx", "connect")):
        return pymysql.connect(**settings)  # pragma: no cover - another PyMySQL
    if not _PREFERRED:
        _PREFERRED.append(conn._create_ssl_ctx({}))
    conn.ssl, conn._ssl_required, conn.ctx = True, False, _PREFERRED[0]
    conn.connect()
    return conn


def server_code(error: BaseException) -> int | None:
    """The MySQL error number of a pymysql error, if it is one."""
    args = getattr(error, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def is_connection_error(error: BaseException) -> bool:
    """Whether `error` means the server went away (worth a reconnect)."""
    if isinstance(error, ConnectionError | OSError | EOFError):
        return True
    try:
        import pymysql
    except ImportError:  # pragma: no cover
        return False
    return isinstance(
        error, pymysql.err.OperationalError | pymysql.err.InterfaceError | Unreachable
    )
