"""Every log source through every sink, the relay SIGKILLed once mid-stream (tests/matrix).

The event store and the replicas hold every change exactly once (a replica's table
equals the source's), the brokers and stdout every change at least once and in
order per row. ``bench/matrix.py`` prints the same cases as a table.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.matrix import SINKS, SOURCES, run

pytestmark = pytest.mark.server

# cases that fail for a bug being fixed elsewhere: strict, so the fix must remove them
KNOWN: dict[tuple[str, str], str] = {}


def _cases() -> list[object]:
    cases = []
    for source in SOURCES:
        for sink in SINKS:
            reason = KNOWN.get((source, sink))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            cases.append(pytest.param(source, sink, id=f"{source}-{sink}", marks=marks))
    return cases


@pytest.mark.parametrize(("source", "sink"), _cases())
def test_every_change_reaches_the_sink_across_a_kill(
    source: str, sink: str, tmp_path: Path
) -> None:
    result = run(source, sink, tmp_path)
    print(
        f"{source} -> {sink}: sent {result.sent}, delivered {result.delivered}, "
        f"duplicates {result.duplicates}, missing {result.missing}, "
        f"restarted relay delivered {result.second_run}, {result.seconds:.1f} s"
    )
    assert result.ok, result.verdict
