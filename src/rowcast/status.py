"""What ``rowcast status`` shows: the reports of every relay and consumer, read now.

`gather(urls)` reads the reports kept at each checkpoint store
(`rowcast.checkpoint.report.read_reports`) and turns each into an *entry*: the
report's fields, with these worked out at the time of reading:

``store``
    the URL of the checkpoint store it was found at (password masked).
``reported_state``
    the state the report says; ``state`` is what it is now: ``stale`` when a
    starting, running or retrying reader's report is older than `stale_after`
    (default: 3 of its intervals, at least 15 s: the process is gone, e.g.
    SIGKILLed), ``stalled`` when a running or retrying one says it is stalled
    (retrying for longer than its ``stall_after``, say), else the reported state.
``age``
    seconds since the report was written.
``head``, ``lag_bytes``, ``lag_changes``, ``log``
    asked from the source now when it can be (its URL is in the report with the
    password masked: a source whose user has a password is asked only through
    ``sources=``, ``--source URL``); else the report's.
``lag_seconds``
    a live reader's own, plus the report's age while it was behind; a reader
    that is not running: 0 while its position is still the source's head, else
    its last lag plus the time since its report (at most; it grows).
``problems``
    why the entry is not healthy (failed, stale, stalled, log lost), sentences.
``warnings``
    the source's warnings (`rowcast.sources.health.LogHealth`), and why the
    source could not be asked.
``healthy``
    no problem.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping
from typing import Any

from ._url import masked
from .checkpoint.report import LIVE, read_reports
from .checkpoint.report import stale_after as stale_limit
from .monitor import source_url
from .sources.base import open_source
from .sources.health import LogHealth

__all__ = ["gather", "healthy", "source_keys"]


def source_keys(urls: Iterable[str]) -> dict[str, str]:
    """``{how reports name the source: its URL}`` for the ``--source`` URLs given."""
    keys: dict[str, str] = {}
    for url in urls:
        keys[masked(url)] = url
        with contextlib.suppress(Exception):  # a URL no source takes: matched as given
            source = open_source(url)
            keys[source_url(source)] = url
            source.close()
    return keys


def gather(
    urls: Iterable[str],
    *,
    sources: Mapping[str, str] | None = None,
    stale_after: float | None = None,
    probe: bool = True,
    now: float | None = None,
) -> list[dict[str, Any]]:
    """The entries of every report at each of `urls` (module docstring), in order.

    `sources` maps a report's masked source URL to the URL to ask it with
    (`source_keys`); `probe` False never asks a source. A store that cannot be
    read raises its `StoreError` / `ConfigError`.
    """
    entries = []
    for url in urls:
        for report in read_reports(url):
            entries.append(_entry(report, masked(url), sources or {}, stale_after, probe, now))
    return entries


def healthy(entries: list[dict[str, Any]]) -> bool:
    """Whether there is an entry and every one is healthy (the exit status of status)."""
    return bool(entries) and all(entry["healthy"] for entry in entries)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _entry(
    report: dict[str, Any],
    store: str,
    sources: Mapping[str, str],
    stale_after: float | None,
    probe: bool,
    now: float | None,
) -> dict[str, Any]:
    now = time.time() if now is None else now
    entry = dict(report)
    entry["store"] = store
    reported = _number(report.get("reported_at"))
    age = max(0.0, now - reported) if reported is not None else None
    interval = _number(report.get("interval")) or 5.0
    limit = stale_after if stale_after is not None else stale_limit(interval)
    state = str(report.get("state"))
    entry["reported_state"] = state
    entry["age"] = age
    live = state in LIVE and age is not None and age <= limit
    if state in LIVE and not live:
        state = "stale"
    elif live and state in ("running", "retrying") and report.get("stalled"):
        state = "stalled"
    entry["state"] = state
    warnings: list[str] = []
    health = _ask(report, sources, warnings) if probe and report.get("kind") == "relay" else None
    lag = _number(report.get("lag_seconds"))
    if health is not None:
        entry["head"] = health.head
        entry["head_at"] = now
        entry["lag_bytes"] = health.behind_bytes
        entry["lag_changes"] = health.behind_changes
        entry["log"] = health.to_dict()
    found = entry.get("log")
    log: dict[str, Any] = found if isinstance(found, dict) else {}
    if age is not None and lag is not None:
        if live:
            entry["lag_seconds"] = lag + age if lag > 0 else lag
        elif health is not None and health.caught_up:
            entry["lag_seconds"] = 0.0
        elif health is not None or lag > 0:  # the head moved on after its last report
            entry["lag_seconds"] = lag + age
    warnings[:0] = [str(w) for w in log.get("warnings") or ()]
    problems = []
    if state == "failed":
        problems.append(f"failed: {report.get('last_error') or 'see its log'}")
    elif state == "stale":
        problems.append(
            f"stale: no report for {age:.0f}s (it reports every {interval:g}s): the process "
            f"{report.get('pid')} on {report.get('host')} is gone or hung"
        )
    elif state == "stalled":
        problems.append(
            f"stalled: its position has not moved for {report.get('stall_after')}s while the "
            "source's head went on"
        )
    if log.get("lost"):
        problems.append("log lost: " + (warnings[0] if warnings else "see the source"))
    entry["warnings"] = warnings
    entry["problems"] = problems
    entry["healthy"] = not problems
    return entry


def _ask(
    report: dict[str, Any], sources: Mapping[str, str], warnings: list[str]
) -> LogHealth | None:
    """The source's health now, for the report's position (None when it cannot be asked)."""
    shown = report.get("source")
    if not isinstance(shown, str) or not shown:
        return None
    url = sources.get(shown)
    if url is None:
        url = shown.replace(":***@", "@")  # a user without a password
    options = {"slot": report["slot"]} if report.get("slot") else {}
    try:
        source = open_source(url, **options)
    except Exception as error:
        warnings.append(f"cannot ask the source {shown}: {error}")
        return None
    try:
        ask = getattr(source, "health", None)
        return ask(report.get("position")) if ask is not None else None
    except Exception as error:
        hint = (
            "" if url != shown.replace(":***@", "@") else " (give --source URL with its password)"
        )
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        warnings.append(f"cannot ask the source {shown}{hint}: {first}")
        return None
    finally:
        with contextlib.suppress(Exception):
            source.close()
