"""A real ``rowcast relay`` process into a SQLite event store, for the tests that kill one
mid-snapshot or mid-backfill: start it, read its checkpoint, read what it stored."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

from rowcast import Change
from rowcast.store import EventStore
from tests.test_cli_relay import ROWCAST
from tests.test_cli_relay import saved as checkpointed  # what <tmp>/pos holds

__all__ = ["checkpointed", "relay", "stored"]


def relay(url: str, tmp_path: Path, *options: str) -> subprocess.Popen[str]:
    """``rowcast relay URL OPTIONS --to sqlite:///<tmp>/events.db --checkpoint <tmp>/pos``,
    logging JSON on stderr."""
    store, checkpoint = f"sqlite:///{tmp_path / 'events.db'}", str(tmp_path / "pos")
    command = [ROWCAST, "relay", url, *options, "--to", store, "--checkpoint", checkpoint]
    return subprocess.Popen(
        [*command, "--log-format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stored(tmp_path: Path, last: int | None = None) -> list[Change]:
    """The changes in the relay's event store in the order it delivered them (the `last`
    only, when given); none before it made the store. A composite key comes back a tuple."""
    if not (tmp_path / "events.db").exists():
        return []
    with EventStore(f"sqlite:///{tmp_path / 'events.db'}") as store:
        events = store.read_all(limit=last, backwards=last is not None)
        changes = [Change(**event.data) for event in events]
    changes = [
        dataclasses.replace(c, pk=tuple(c.pk)) if isinstance(c.pk, list) else c  # JSON: a list
        for c in changes
    ]
    return changes[::-1] if last is not None else changes
