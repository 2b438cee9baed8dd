"""One case of the matrix: a source's workload through a relay killed once, checked at the sink.

The workload is the seed (7 transactions, 13 changes) then 12 transactions of
`workload` (26 changes: inserts of one and two rows, updates, deletes): 39
changes in 19 transactions, every statement of the three forms the outbox can
write through the ORM too. The steps:

1. the seed is written, the relay starts (``--batch-size 4``) and the case waits
   until the destination shows it;
2. four more transactions, and the destination shows them;
3. four more are written and the relay is SIGKILLed at once, while it reads and
   delivers them (its checkpoint lags: it saves at most once a second);
4. the last four are written while no relay runs; a new relay resumes from the
   checkpoint, the case waits until the destination shows everything and stops it
   with SIGTERM (exit 0).

Then the destination is checked against the source (`check`).
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rowcast.change import Change
from tests.matrix.relay import CaseFailed, RelayProcess
from tests.matrix.sinks import AT_LEAST_ONCE, Changes, Destination, Replica, stdout_file
from tests.matrix.sources import LogDatabase, Rows
from tests.sources.seed import SEED, SEED_SIGNATURES, Signature, workload
from tests.targets import Arrived

__all__ = ["Result", "expected_signatures", "run_case"]

TRANSACTIONS, EXPECTED = workload("m", 12)
PHASES = [[[s] for s in SEED], TRANSACTIONS[:4], TRANSACTIONS[4:8], TRANSACTIONS[8:]]


def expected_signatures() -> list[Signature]:
    """(action, data before, data after) of every change of the workload, in commit order."""
    return [*SEED_SIGNATURES, *(c for tx in EXPECTED for c in tx)]


@dataclasses.dataclass
class Result:
    """What one case found. For a replica: rows instead of changes (see `check`)."""

    source: str
    sink: str
    promise: str
    sent: int = 0  #: changes committed at the source
    delivered: int = 0  #: messages at the destination (replica: rows)
    duplicates: int = 0  #: messages of an id seen before (replica: rows not at the source)
    missing: int = 0  #: changes never delivered (replica: source rows absent or different)
    second_run: int | None = None  #: changes the restarted relay delivered (its stop record)
    problems: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def verdict(self) -> str:
        return "ok" if self.ok else "FAIL: " + "; ".join(self.problems)


def run_case(
    source_name: str, sink_name: str, source: LogDatabase, sink: Destination, tmp: Path
) -> Result:
    """Run the steps of the module docstring; the result, also when the case failed half way."""
    promise = sink.promise if isinstance(sink, Changes) else "replica equal to source"
    result = Result(source_name, sink_name, promise)
    began = time.monotonic()
    checkpoint = sink.checkpoint if isinstance(sink, Changes) else None
    relay = RelayProcess(tmp, source.url, source.args, sink.url, checkpoint)

    def write(phase: int) -> None:
        for statements in PHASES[phase]:
            source.write(statements)
        result.sent = len(SEED_SIGNATURES) + sum(map(len, EXPECTED[: phase * 4]))

    def shown(what: str) -> None:
        if isinstance(sink, Changes):
            relay.wait(lambda: len({i for i, _ in sink.arrived()}) >= result.sent, what)
        else:
            rows = source.rows()
            relay.wait(lambda: sink.rows() == rows, what)

    try:
        write(0)
        relay.start(stdout_file(tmp, 1))
        shown("the seed at the destination")
        write(1)
        shown("the second phase at the destination")
        write(2)
        relay.kill()
        write(3)
        relay.start(stdout_file(tmp, 2))
        shown("every change at the destination after the restart")
        status = relay.stop()
        if status != 0:
            result.problems.append(f"the relay exited {status} on SIGTERM: {relay.last_words()}")
        result.second_run = relay.changes_of_last_run()
        starts = relay.started_from()
        if len(starts) != 2 or starts[1] is None:
            result.problems.append(f"the restart did not resume from a checkpoint: {starts}")
    except CaseFailed as failed:
        result.problems.append(str(failed))
    finally:
        relay.close()
    check(result, source, sink)
    result.seconds = time.monotonic() - began
    return result


def check(result: Result, source: LogDatabase, sink: Destination) -> None:
    """Count what arrived and add to `result.problems` whatever breaks the sink's promise.

    Against the changes written so far (`result.sent` of them): all of them when the
    case went to its end.
    """
    rows = source.rows()
    if isinstance(sink, Replica):
        got = sink.rows() or []
        result.delivered = len(got)
        result.duplicates = len(set(got) - set(rows))
        result.missing = len(set(rows) - set(got))
        if got != rows and not result.problems:
            result.problems.append(f"the replica holds {got}, the source {rows}")
        return
    arrived = sink.arrived()
    first = _first_seen(arrived, result.problems)
    result.delivered = len(arrived)
    result.duplicates = len(arrived) - len(first)
    want = Counter(expected_signatures()[: result.sent])
    got_signatures = Counter(_signature(change) for change in first.values())
    result.missing = sum((want - got_signatures).values())
    if result.problems:
        return  # the case did not finish: the counts say how far it got
    if result.missing:
        result.problems.append(f"{result.missing} changes missing: {sorted(want - got_signatures)}")
    unexpected = got_signatures - want
    if unexpected:
        result.problems.append(f"changes nobody made: {sorted(unexpected)}")
    if result.duplicates and sink.promise != AT_LEAST_ONCE:
        result.problems.append(f"{result.duplicates} changes held twice")
    result.problems += _per_row(list(first.values()), rows)


def _signature(change: Change) -> Signature:
    before, after = change.before or {}, change.after or {}
    return (str(change.action), before.get("data"), after.get("data"))


def _first_seen(arrived: Arrived, problems: list[str]) -> dict[str, Change]:
    """Each change id with the change it first came with; a repeat must carry the same."""
    first: dict[str, Change] = {}
    for change_id, change in arrived:
        seen = first.setdefault(change_id, change)
        if (seen.pk, seen.position, _signature(seen)) != (
            change.pk,
            change.position,
            _signature(change),
        ):
            problems.append(f"id {change_id} came with {seen} and with {change}")
    return first


def _per_row(changes: list[Change], rows: Rows) -> list[str]:
    """Problems with the order per row: each change must follow from the one before it.

    A row's changes (repeats dropped) chain: a write finds no row, an update or a
    delete finds the row its before image shows; the last leaves the row the
    source holds now (or none). A row deleted may be written again (SQLite reuses
    the largest id once it is gone).
    """
    problems = []
    state: dict[Any, Any] = {}  # pk -> data, for the rows that exist
    for change in changes:
        action, before, after = _signature(change)
        now = state.get(change.pk, _ABSENT)
        expected_now = _ABSENT if action == "write" else before
        if now != expected_now:
            problems.append(f"row {change.pk}: {action} {before!r} -> {after!r} after {now!r}")
        if action == "delete":
            state.pop(change.pk, None)
        else:
            state[change.pk] = after
    if sorted(state.items()) != sorted(rows):
        problems.append(f"the changes leave the rows {sorted(state.items())}, the source {rows}")
    return problems


_ABSENT = "(no row)"
