"""Every log source through every sink, the relay SIGKILLed once mid-stream: a table.

Runs the cases of tests/test_matrix.py (the machinery is tests/matrix): the seed
workload (39 changes in 19 transactions) from the binlog (MariaDB), logical
replication (PostgreSQL), SQLite's triggers and a SQLAlchemy outbox on SQLite,
through ``python -m rowcast relay`` killed with SIGKILL once and restarted, into the
event store, Redis Streams, NATS JetStream, RabbitMQ, replicas in SQLite, PostgreSQL
and MariaDB, and stdout. Per case: the changes sent, the messages delivered (for a
replica: its rows), the duplicates (a replica: rows the source does not have), the
changes missing (a replica: source rows it lacks or holds otherwise), how many
changes the restarted relay delivered, and the verdict. A case needing a server
that does not run here is skipped. Run from the repository's root:
``python bench/matrix.py [--sources binlog,logical] [--sinks redis,stdout] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests package

import pytest
from tests.matrix import SINKS, SOURCES, Result, run
from tests.test_matrix import KNOWN


def case(source: str, sink: str) -> Result | str:
    """The case's result, or why it was skipped."""
    with tempfile.TemporaryDirectory(prefix="rowcast-matrix-") as tmp:
        try:
            return run(source, sink, Path(tmp))
        except pytest.skip.Exception as skipped:
            return f"skipped: {skipped.msg}"


def verdict(result: Result) -> str:
    if result.ok:
        return "ok"
    known = KNOWN.get((result.source, result.sink))
    text = result.verdict.replace("\n", " ")
    return f"known bug ({known.split(':')[0]}) {text}"[:160] if known else text[:160]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", default=",".join(SOURCES), help="comma-separated")
    parser.add_argument("--sinks", default=",".join(SINKS), help="comma-separated")
    parser.add_argument("--repeat", type=int, default=1, help="run the matrix this many times")
    args = parser.parse_args()
    sources, sinks = args.sources.split(","), args.sinks.split(",")
    for name in sources:
        if name not in SOURCES:
            parser.error(f"no source {name!r}: use {', '.join(SOURCES)}")
    for name in sinks:
        if name not in SINKS:
            parser.error(f"no sink {name!r}: use {', '.join(SINKS)}")
    print(f"python {platform.python_version()} on {platform.machine()}, {platform.system()}")
    for round_ in range(1, args.repeat + 1):
        began = time.monotonic()
        header = f"{'source':<16}{'sink':<18}{'sent':>5}{'delivered':>10}{'dup':>5}{'missing':>8}"
        print(f"\nround {round_}\n{header}{'run 2':>6}{'s':>6}  verdict")
        failed = 0
        for source in sources:
            for sink in sinks:
                result = case(source, sink)
                if isinstance(result, str):
                    print(f"{source:<16}{sink:<18}{result}")
                    continue
                failed += not result.ok
                print(
                    f"{source:<16}{sink:<18}{result.sent:>5}{result.delivered:>10}"
                    f"{result.duplicates:>5}{result.missing:>8}{result.second_run or '-':>6}"
                    f"{result.seconds:>6.1f}  {verdict(result)}",
                    flush=True,
                )
        seconds = time.monotonic() - began
        print(
            f"{len(sources) * len(sinks)} cases, {failed} failed, in {seconds:.0f} s"
            " (replicas: delivered = rows, dup = rows not at the source, missing = source rows "
            "absent or different; run 2 = changes the restarted relay delivered)"
        )


if __name__ == "__main__":
    main()
