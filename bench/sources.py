"""Both log sources of issue 10 in one run: PostgreSQL logical replication and SQLite triggers.

Runs ``bench/logical.py`` (LogicalSource + Hub beside a bare psycopg2
``consume_stream`` loop on the same WAL, and commit-to-subscriber latency) and then
``bench/triggers.py`` (an app's writes with and without the capture triggers, the
rate the source delivers, and its latency), each in its own interpreter so neither
warms the other's caches, and prints their tables one after the other.

    python bench/sources.py [--quick]

``--quick`` passes each script its smaller workload options (for a smoke run).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUICK = {
    "logical.py": ["--rows", "20000", "--rounds", "3", "--seconds", "3"],
    "triggers.py": ["--rows", "4000", "--single", "200", "--rounds", "3", "--seconds", "3"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads")
    args = parser.parse_args()
    failed = 0
    for script, title in [
        ("logical.py", "PostgreSQL logical replication (pgoutput)"),
        ("triggers.py", "SQLite trigger capture"),
    ]:
        print(f"\n## {title}: bench/{script}\n", flush=True)
        command = [sys.executable, str(HERE / script), *(QUICK[script] if args.quick else [])]
        failed += subprocess.run(command, check=False).returncode != 0
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
