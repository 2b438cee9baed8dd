"""Where the relay's time goes: the binlog source alone, the relay to Redis, to every sink.

The workload of ``bench/relay.py`` (`--changes` row changes, half inserts and half
updates, in transactions of `--tx-size`) is committed once; then each chosen *phase* reads
that same binlog stretch in a child interpreter of its own:

``bare``     python-mysql-replication's own loop, every row decoded (``event.rows``)
``source``   ``BinlogSource`` iterated, no sink
``redis``    ``Relay`` to Redis Streams
``nats``     ``Relay`` to NATS JetStream
``rabbitmq``, ``store``  ``Relay`` to RabbitMQ, to the SQLite event store
``all``      ``Relay`` to every sink of ``bench/relay.py`` at once

Each phase is counted in one of four ways: wall seconds (the default, a child's start
included), user-space CPU instructions under ``valgrind --tool=callgrind``
(``--instructions``: a figure that does not move with the load of a shared machine; the
phase's child minus the same child reading nothing), a cProfile of the phase's main
thread (``--profile DIR``: one ``.prof`` file per phase, its top functions printed), or
py-spy samples of every thread while it holds the GIL (``--spy DIR``: py-spy from the
``bench`` extra; the functions most seen, by their own samples and with their callees).
Timing never fails the script; a phase that misses a change does.

    python bench/hotpath.py --changes 5000 --instructions bare source redis all
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import importlib
import json
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pymysql

sys.path.insert(0, str(Path(__file__).resolve().parent))
import relay as relay_bench  # the workload and the sinks of bench/relay.py

PHASES = ("bare", "source", "redis", "nats", "rabbitmq", "store", "all")
WARM = (
    "pymysqlreplication.binlogstream",
    "rowcast.sources.mysql._events",
    "rowcast.sinks.redis",
    "rowcast.sinks.nats",
    "rowcast.sinks.rabbitmq",
    "rowcast.sinks.store",
    "rowcast.store.sqlite",
    "redis",
    "nats",
    "pika",
)


def run_phase(phase: str, spec: dict[str, Any]) -> int:
    """Read the stretch once as `phase` (in this process): the changes it saw."""
    args = argparse.Namespace(**spec["args"])
    start, end, tmp = spec["start"], spec["end"], spec["tmp"]
    for module in WARM:  # imported in every phase, "none" too: their import is not counted
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    if phase == "none":
        return 0
    if phase == "bare":
        return relay_bench.library_loop(args.url, start, end, spec["server_id"], relay_bench.NAME)
    if phase == "source":
        read = relay_bench.source(args, start, end, spec["server_id"] - relay_bench.SERVER_ID)
        return sum(len(tx) for tx in read)
    found = {t.name: t for t in relay_bench.targets(args, tmp)}
    wanted = {
        "redis": ["redis streams"],
        "nats": ["nats jetstream"],
        "rabbitmq": ["rabbitmq"],
        "store": ["store (sqlite)"],
        "all": list(found),
    }[phase]
    missing = [name for name in wanted if name not in found]
    if missing:
        raise SystemExit(f"{phase}: {', '.join(missing)} not reachable")
    sinks = [found[name].open() for name in wanted]
    k = spec["server_id"] - relay_bench.SERVER_ID
    try:
        _, count = relay_bench.relay(args, start, end, sinks, tmp, k)
    finally:
        for name in wanted:
            found[name].cleanup()
    return count


def child(phase: str, spec_file: str, profile: str | None) -> None:
    """The child's side: run one phase, print the count (and write the profile)."""
    spec = json.loads(Path(spec_file).read_text())
    if profile:
        profiler = cProfile.Profile()
        count = profiler.runcall(run_phase, phase, spec)
        profiler.dump_stats(profile)
    else:
        count = run_phase(phase, spec)
    print(f"COUNT {count}", flush=True)


def spawn(phase: str, spec_file: str, mode: str, out: Path, k: int) -> tuple[float, int, str]:
    """Run `phase` in a child: (seconds or instructions, changes, profile path)."""
    spec = json.loads(Path(spec_file).read_text())
    spec["server_id"] = relay_bench.SERVER_ID + 100 + k
    Path(spec_file).write_text(json.dumps(spec))
    command = [sys.executable, __file__, "--child", phase, "--spec", spec_file]
    prof = str(out / f"{phase}.{'txt' if mode == 'spy' else 'prof'}")
    if mode == "profile":
        command += ["--child-profile", prof]
    if mode == "spy":
        command = [
            str(Path(sys.executable).with_name("py-spy")),
            "record",
            "-r",
            "250",
            "--gil",
            "--function",
            "--format",
            "raw",
            "-o",
            prof,
            "--",
            *command,
        ]
    if mode == "instructions":
        command = [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            *command,
        ]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - began
    found = re.search(r"COUNT (\d+)", done.stdout)
    if done.returncode or not found:
        raise SystemExit(f"{phase} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    if mode == "instructions":
        collected = re.search(r"Collected : (\d+)", done.stderr)
        if not collected:
            raise SystemExit(f"no instruction count from valgrind: {done.stderr[-500:]}")
        return float(collected.group(1)), int(found.group(1)), prof
    return seconds, int(found.group(1)), prof


def spy_summary(path: Path, top: int) -> str:
    """The functions most seen in py-spy's collapsed stacks: self and inclusive shares."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [re.sub(r" \((.*/)?([^/]+)\)$", r" (\2)", f) for f in stack.split(";")]
        n = int(count)
        total += n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames[1:]):  # the first frame is the thread
            inclusive[frame] = inclusive.get(frame, 0) + n
    lines = ["| self % | total % | function |", "|---:|---:|---|"]
    for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(
            f"| {100 * n / total:.1f} | {100 * inclusive.get(frame, n) / total:.1f} | {frame} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phases", nargs="*", default=["bare", "source", "redis", "all"])
    parser.add_argument("--url", default="mysql://root@127.0.0.1:3306/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--changes", type=int, default=5_000)
    parser.add_argument("--tx-size", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--instructions", action="store_true", help="count with callgrind")
    parser.add_argument("--profile", metavar="DIR", help="cProfile each phase into DIR")
    parser.add_argument("--spy", metavar="DIR", help="py-spy each phase (every thread) into DIR")
    parser.add_argument("--top", type=int, default=25, help="functions shown per profile")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--child-profile", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.spec, args.child_profile)
        return
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases {sorted(unknown)}; known: {', '.join(PHASES)}")
    mode = (
        "instructions"
        if args.instructions
        else "profile"
        if args.profile
        else "spy"
        if args.spy
        else "seconds"
    )
    if mode == "instructions" and shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
    parts = urlsplit(args.url)
    conn = pymysql.connect(
        host=parts.hostname, port=parts.port or 3306, user="root", database="test"
    )
    relay_bench.NAME = name = f"hotpath_bench_{os.getpid()}"
    with (
        tempfile.TemporaryDirectory(prefix="rowcast-bench-hotpath-") as tmp,
        contextlib.ExitStack() as undo,
    ):
        undo.callback(conn.close)
        undo.callback(lambda: conn.cursor().execute(f"DROP TABLE IF EXISTS {name}"))
        start, end = relay_bench.workload(conn, args.changes, args.tx_size)
        options = {k: v for k, v in vars(args).items() if not k.startswith("child")}
        spec_file = f"{tmp}/spec.json"
        out = Path(args.profile or args.spy or tmp)
        out.mkdir(parents=True, exist_ok=True)
        spec = {"args": options, "start": start, "end": end, "tmp": tmp, "name": name}
        Path(spec_file).write_text(json.dumps(spec))
        # the children find the table by this module's NAME: pass it through the spec
        os.environ["ROWCAST_BENCH_TABLE"] = name
        base = spawn("none", spec_file, mode, out, 0)[0] if mode == "instructions" else 0.0
        results = []
        for k, phase in enumerate(args.phases, 1):
            value, count, prof = spawn(phase, spec_file, mode, out, k)
            if count != args.changes:
                raise SystemExit(f"{phase}: saw {count} changes, not {args.changes}")
            results.append((phase, value - base, prof))
    print(
        f"hot path: {args.changes:,} changes in transactions of {args.tx_size}, counted in {mode}"
    )
    if mode == "spy":
        for phase, _, prof in results:
            print(f"\n### {phase}: share of samples (all threads), self and with callees\n")
            print(spy_summary(Path(prof), args.top))
        return
    if mode == "profile":
        for phase, _, prof in results:
            print(f"\n### {phase}\n")
            stats = pstats.Stats(prof)
            stats.sort_stats("tottime").print_stats(args.top)
        return
    unit = "instructions per change" if mode == "instructions" else "µs per change"
    print(f"\n| phase | {unit} | changes/s | vs bare |")
    print("|---|---:|---:|---:|")
    per = {phase: value / args.changes for phase, value, _ in results}
    for phase, value, _ in results:
        scale = 1 if mode == "instructions" else 1e6
        rate = "" if mode == "instructions" else f"{args.changes / value:,.0f}"
        vs = f"{per['bare'] / per[phase]:.2f}" if "bare" in per else ""
        print(f"| {phase} | {per[phase] * scale:,.0f} | {rate} | {vs} |")


if __name__ == "__main__":
    if os.environ.get("ROWCAST_BENCH_TABLE"):
        relay_bench.NAME = os.environ["ROWCAST_BENCH_TABLE"]
    main()
