"""Time inserting then updating rows of a versioned model: plain, rowcast.audit, Continuum.

The workload: insert `--rows` rows in transactions of `--batch` (``add_all`` + ``commit``),
then update every row, `--batch` rows per transaction (load them by key, change two columns,
``commit``), on a new SQLite file. "plain" is SQLAlchemy alone, "rowcast" the same model with
`rowcast.audit.Versioned`, "continuum" with SQLAlchemy-Continuum's ``__versioned__``. Each
(round, variant) runs in a fresh interpreter; Continuum runs in a venv of its own (made on
first use in --continuum-venv, with this SQLAlchemy version; skipped if it cannot be made),
which also times its own "plain" so that each overhead is against a baseline of its own
interpreter. Rounds alternate the order; reported are medians. A missing revision fails the
script; timing never does.
"""

import argparse
import json
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from datetime import date, time
from pathlib import Path
from time import perf_counter
from typing import Any

TARGET = 0.5  # rowcast's overhead over plain: at most half of Continuum's
VENV = Path(tempfile.gettempdir()) / "rowcast-bench-continuum"


def child(variant: str, db: str, rows: int, batch: int) -> dict[str, Any]:
    """One timed run of `variant` against a new database file `db`."""
    from sqlalchemy import String, create_engine, func, select
    from sqlalchemy.orm import (
        DeclarativeBase,
        Mapped,
        configure_mappers,
        mapped_column,
        sessionmaker,
    )

    mixins: tuple[type, ...] = ()
    extra: dict[str, Any] = {}
    if variant == "rowcast":
        from rowcast.audit import Versioned

        mixins = (Versioned,)
    elif variant == "continuum":
        from sqlalchemy_continuum import make_versioned

        make_versioned(user_cls=None)
        extra = {"__versioned__": {}}

    class Base(DeclarativeBase):
        pass

    namespace = {
        "__tablename__": "reservations",
        "__annotations__": {
            "id": Mapped[int],
            "name": Mapped[str],
            "date": Mapped[date],
            "time": Mapped[time],
            "party": Mapped[int],
        },
        "id": mapped_column(primary_key=True),
        "name": mapped_column(String(50)),
        **extra,
    }
    Reservation: Any = type("Reservation", (*mixins, Base), namespace)
    configure_mappers()
    engine = create_engine(f"sqlite:///{db}")
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine)

    start = perf_counter()
    for first in range(1, rows + 1, batch):
        with factory() as session:
            session.add_all(
                Reservation(
                    name=f"guest {n}", date=date(2015, 4, 15), time=time(19, n % 60), party=n % 9
                )
                for n in range(first, first + batch)
            )
            session.commit()
    for first in range(1, rows + 1, batch):
        with factory() as session:
            query = select(Reservation).where(Reservation.id.between(first, first + batch - 1))
            for obj in session.scalars(query):
                obj.party += 1
                obj.name = obj.name.upper()
            session.commit()
    seconds = perf_counter() - start

    revisions = 0
    if variant != "plain":
        if variant == "rowcast":
            version = Reservation.Revision
        else:
            from sqlalchemy_continuum import version_class

            version = version_class(Reservation)
        with factory() as session:
            revisions = session.scalar(select(func.count()).select_from(version)) or 0
    engine.dispose()
    return {"seconds": seconds, "revisions": revisions}


def run(python: str, variant: str, db: str, rows: int, batch: int) -> dict[str, Any]:
    """`child` in a fresh interpreter (its stderr passes through)."""
    cmd = [python, __file__, "--child", variant, "--db", db, "--rows", str(rows)]
    cmd += ["--batch", str(batch)]
    return dict(json.loads(subprocess.check_output(cmd, text=True)))


def continuum_python(venv: Path) -> str | None:
    """The venv's python with SQLAlchemy-Continuum, made on first use (None if it cannot be)."""
    import sqlalchemy

    python = venv / "bin" / "python"
    check = [str(python), "-c", "import sqlalchemy_continuum"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return str(python)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pins = ["sqlalchemy-continuum", f"sqlalchemy=={sqlalchemy.__version__}"]
        pip = [str(python), "-m", "pip", "install", "-q", *pins]
        subprocess.run(pip, check=True, capture_output=True, timeout=300)
    except (subprocess.SubprocessError, OSError) as error:
        print(f"SQLAlchemy-Continuum unavailable ({error}): compared with plain only")
        return None
    return str(python)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000, help="rows inserted then updated")
    parser.add_argument("--batch", type=int, default=100, help="rows per transaction")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each variant")
    parser.add_argument("--continuum-venv", type=Path, default=VENV, help="venv for Continuum")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.db, args.rows, args.batch)))
        return

    import sqlalchemy

    other = continuum_python(args.continuum_venv)
    runs = [(sys.executable, "plain"), (sys.executable, "rowcast")]
    if other is not None:
        runs += [(other, "plain"), (other, "continuum")]
    times: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
    with tempfile.TemporaryDirectory(prefix="rowcast-bench-") as tmp:
        for r in range(args.rounds):
            for n, (python, variant) in enumerate(runs if r % 2 == 0 else runs[::-1]):
                out = run(python, variant, f"{tmp}/{r}-{n}.db", args.rows, args.batch)
                times[(python, variant)].append(out["seconds"])
                if variant != "plain" and out["revisions"] != 2 * args.rows:
                    raise AssertionError(
                        f"{variant} kept {out['revisions']} revisions, expected {2 * args.rows}"
                    )

    print(
        f"{args.rounds} rounds: insert then update {args.rows:,} rows, {args.batch} per "
        f"transaction, one new SQLite file each"
    )
    print(
        f"Python {platform.python_version()}, SQLAlchemy {sqlalchemy.__version__}, "
        f"SQLite {sqlite3.sqlite_version}; every variant kept {2 * args.rows:,} revisions\n"
    )
    median = {run: statistics.median(t) for run, t in times.items()}
    print("| variant | interpreter | median seconds | rows/s | vs its plain | overhead |")
    print("|---|---|---:|---:|---:|---:|")
    overhead: dict[str, float] = {}
    for python, variant in runs:
        base = median[(python, "plain")]
        seconds = median[(python, variant)]
        overhead[variant] = seconds / base - 1
        where = "rowcast's" if python == sys.executable else "Continuum's venv"
        print(
            f"| {variant} | {where} | {seconds:.3f} | {2 * args.rows / seconds:,.0f} "
            f"| {seconds / base:.2f} | {overhead[variant]:+.0%} |"
        )
    if "continuum" in overhead:
        share = overhead["rowcast"] / overhead["continuum"]
        verdict = "met" if share <= TARGET else "NOT met"
        print(f"\nrowcast's overhead is {share:.2f} of Continuum's; target <= {TARGET}: {verdict}")


if __name__ == "__main__":
    main()
