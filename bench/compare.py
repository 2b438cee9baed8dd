"""Run one bench script on an older commit and on this tree, in turns, and print both.

The machine is noisy, so a before/after figure is only worth something when both sides
run in one session: this checks the older commit out in a temporary git worktree and
runs ``python bench/<script> <args>`` with its ``src`` first on the path, then the same
script of this tree with this tree's ``src``, `--turns` times, printing each output
under a header. Nothing is parsed: read the tables side by side.

    python bench/compare.py 9c67a79 store.py -- --events 200000 --rounds 3
    ROWCAST_PURE=1 python bench/compare.py HEAD capture.py   # environment is passed on
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def run(tree: Path, script: str, args: list[str], label: str) -> int:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree / "src"), str(tree)]))
    print(f"\n=== {label}: {script} {' '.join(args)}", flush=True)
    return subprocess.call([sys.executable, str(tree / "bench" / script), *args], env=env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the older commit (e.g. main~3, a hash)")
    parser.add_argument("script", help="a script in bench/, e.g. store.py")
    parser.add_argument("--turns", type=int, default=2, help="runs of each side, alternating")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    options, args = parser.parse_args(argv[:cut]), argv[cut + 1 :]  # after --: the script's
    if not (HERE / "bench" / options.script).is_file():
        parser.error(f"no bench/{options.script} in {HERE}")
    failed = 0
    with checked_out(options.rev) as base:
        if not (base / "bench" / options.script).is_file():
            parser.error(f"{options.rev} has no bench/{options.script}")
        for turn in range(1, options.turns + 1):
            failed |= run(base, options.script, args, f"{options.rev} (turn {turn})")
            failed |= run(HERE, options.script, args, f"this tree (turn {turn})")
    return 1 if failed else 0


@contextlib.contextmanager
def checked_out(rev: str) -> Iterator[Path]:
    """The tree of commit `rev`, in a temporary git worktree removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="rowcast-compare-") as tmp:
        base = Path(tmp) / "base"
        subprocess.run(
            ["git", "-C", str(HERE), "worktree", "add", "--detach", "-q", str(base), rev],
            check=True,
        )
        try:
            yield base
        finally:
            subprocess.run(
                ["git", "-C", str(HERE), "worktree", "remove", "--force", str(base)], check=False
            )


if __name__ == "__main__":
    sys.exit(main())
