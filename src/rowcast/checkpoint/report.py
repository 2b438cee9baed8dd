"""Reports: what each relay and consumer says about itself, kept beside its checkpoint.

A running relay (and a consumer given ``--report``) writes a *report* every few
seconds, and a last one when it stops, into the same store as its checkpoint,
under the same name. ``rowcast status`` reads them back. A report is one JSON
object (format 1; a field may be added, none is renamed or removed):

``format``
    1.
``kind``
    ``"relay"`` or ``"consumer"``.
``name``
    the checkpoint's name (a consumer's: ``--report ...?name=``, default
    ``consumer-<group>``).
``pid``, ``host``
    the process and the machine it runs on.
``source``
    the source URL, password masked (a consumer's: its broker's URL).
``slot``
    the PostgreSQL replication slot it reads (null for other sources).
``sinks``
    the sink URLs, passwords masked (a consumer's: its handler).
``state``
    ``"starting"``, ``"running"``, ``"retrying"`` (a sink, the checkpoint or the
    broker failing: see ``last_error``), ``"stopped"`` or ``"failed"``.
``stalled``
    true while its position has not moved for ``stall_after`` seconds while the
    source's head moved.
``position``
    where it has handled everything up to: the last delivered transaction's
    position, or further on when the source had nothing for it past that.
``head``, ``head_at``
    the source's current position and when it was read (null when unknown).
``lag_seconds``
    0 when ``position`` is at the head; else how long ago the head was last
    seen at or before ``position`` (so it grows while the relay is stuck).
``lag_bytes``, ``lag_changes``
    how much log lies between ``position`` and ``head`` (bytes of WAL or binlog;
    changes for SQLite), null when unknown.
``rate``
    changes per second over the last few seconds.
``changes``, ``errors``
    changes delivered (handled) and failures counted since it started.
``last_commit``
    commit time of the last change delivered.
``last_error``, ``last_error_at``
    the last failure (a sink's, the checkpoint's, the broker's, the source's
    or what ended it) and when; null while none happened.
``log``
    what the source's server says about the log kept for it (`LogHealth`
    fields: ``retained_bytes``, ``limit_bytes``, ``wal_status``,
    ``oldest_log``, ``expire_seconds``, ``warnings``...), or null.
``started_at``, ``reported_at``, ``interval``
    when it started, when it wrote this report, and how often it writes one
    (a report older than a few intervals is ``stale``: the process is gone).

Every time is UTC epoch seconds. Stores: a file checkpoint ``<dir>/<file>`` keeps
the report of each name in ``<dir>/.<file>.report.json`` (hidden, beside it), a
SQL store in table ``rowcast_report`` (created at the first report), Redis in key
``rowcast:report:<name>``. Reading reports (`read_reports`) creates nothing.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable
from urllib.parse import parse_qsl, urlsplit

from .. import backends
from .._url import masked
from ..errors import ConfigError

__all__ = [
    "FORMAT",
    "LIVE",
    "STATES",
    "Reporting",
    "holder",
    "read_reports",
    "refuse_a_held",
    "stale_after",
]

FORMAT: Final = 1
STATES: Final = ("starting", "running", "retrying", "stopped", "failed")
LIVE: Final = ("starting", "running", "retrying")  #: while its process runs


def stale_after(interval: float | None) -> float:
    """Seconds after which the report of a reader that reports every `interval` seconds
    is stale (its process is gone): three intervals, at least 15 s."""
    return max(3 * (interval or 5.0), 15.0)


@runtime_checkable
class Reporting(Protocol):
    """A checkpoint that keeps its reader's report beside its position."""

    name: str

    def save_report(self, report: dict[str, Any]) -> None:
        """Replace the report of this checkpoint's name; `StoreError` when it cannot."""
        ...


def read_reports(url: str, name: str | None = None) -> list[dict[str, Any]]:
    """Every report kept at the checkpoint store `url` (only `name`'s, or the URL's
    ``?name=``'s, when given), sorted by name; creates nothing. A backend that keeps
    none is a `ConfigError`."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"a checkpoint URL is a non-empty string, not {url!r}")
    if "://" in url:
        names = [v for k, v in parse_qsl(urlsplit(url).query) if k == "name"]
        name = name or (names[0] if names else None)
        cls = backends.load("checkpoint", url)
    else:
        cls = backends.load("checkpoint", url, "file")
    reader = getattr(cls, "read_reports", None)
    if reader is None:
        raise ConfigError(f"the checkpoint backend of {masked(url)} keeps no reports")
    reports: list[dict[str, Any]] = reader(url, name)
    return sorted(reports, key=lambda report: str(report.get("name")))


def holder(checkpoint: object) -> dict[str, Any] | None:
    """The report of another relay that runs on `checkpoint` now, or None: a report that
    says it runs and is not stale, from another process (on this machine, one that is
    alive). Unreadable reports, or none kept, are None."""
    reports_of = getattr(checkpoint, "reports", None)
    if reports_of is None:
        return None
    try:
        reports: list[dict[str, Any]] = reports_of()
    except Exception:
        return None
    now = time.time()
    for report in reports:
        reported, interval = report.get("reported_at"), report.get("interval")
        if report.get("kind") != "relay" or report.get("state") not in LIVE:
            continue
        if not isinstance(reported, int | float) or now - reported > stale_after(
            interval if isinstance(interval, int | float) else None
        ):
            continue
        if report.get("host") == socket.gethostname() and not running(
            report.get("pid"), report.get("started_at")
        ):
            continue
        return report
    return None


def running(pid: Any, started_at: Any = None) -> bool:
    """True if `pid` is another process that runs on this machine, and (where /proc says
    when it started) one that started by `started_at`, the relay's start: a zombie (a
    killed relay its supervisor has not reaped yet) runs no more, and a process that
    started later took a dead relay's pid."""
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: it runs
        pass
    seen = _proc(pid)
    if seen is None:
        return True  # no /proc (macOS...), or it just ended: signal 0 said it runs
    state, began = seen
    if state in ("Z", "X"):
        return False
    return began_by(began, started_at)


def started(pid: int) -> float | None:
    """When process `pid` of this machine started (seconds since the epoch; None: unknown)."""
    seen = _proc(pid)
    return None if seen is None else seen[1]


def began_by(began: float | None, at: Any) -> bool:
    """Whether a process that began at `began` (None: unknown) may be the one that ran at
    `at` (None: unknown). /proc's boot time is whole seconds: a margin of 2 s."""
    return began is None or not isinstance(at, int | float) or began <= at + 2


def _proc(pid: int) -> tuple[str, float] | None:
    """Process `pid`'s state letter and start time, from /proc (None: no /proc, or gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        return fields[0], boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def refuse_a_held(checkpoint: Any) -> None:
    """A `ConfigError` (with the fix) when another relay runs on `checkpoint` (`holder`)."""
    report = holder(checkpoint)
    if report is None:
        return
    age = time.time() - float(report["reported_at"])
    interval = report.get("interval")
    limit = stale_after(interval if isinstance(interval, int | float) else None)
    raise ConfigError(
        f"checkpoint {checkpoint.url} is in use: a relay from {report.get('source')} "
        f"(pid {report.get('pid')} on {report.get('host')}) said it was {report.get('state')} "
        f"{age:.0f} s ago. Two relays saving one checkpoint save over each other's position, "
        "and the one behind skips changes when it starts again: stop that relay first "
        f"(rowcast status {checkpoint.url} shows it) or give this one its own --checkpoint "
        f"(a relay killed on another machine counts as gone {limit:.0f} s after its last "
        "report)"
    )
