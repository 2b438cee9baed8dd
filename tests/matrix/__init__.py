"""Every log source through every sink, with the relay SIGKILLed once mid-stream.

`tests.matrix.sources` makes the sources, `tests.matrix.sinks` the destinations,
`tests.matrix.case` runs one case and checks it; tests/test_matrix.py runs every
case as a test, bench/matrix.py prints them as a table.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from tests.matrix.case import Result, run_case
from tests.matrix.sinks import SINKS
from tests.matrix.sources import SOURCES

__all__ = ["SINKS", "SOURCES", "Result", "run"]


def run(source: str, sink: str, tmp: Path) -> Result:
    """Case `source` x `sink` in directory `tmp`, with everything it made removed after."""
    with contextlib.ExitStack() as stack:
        database = stack.enter_context(SOURCES[source](tmp))
        destination = stack.enter_context(SINKS[sink](tmp))
        return run_case(source, sink, database, destination, tmp)
