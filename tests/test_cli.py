"""The rowcast command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import rowcast
from rowcast import Change, _speedups
from rowcast.cli import main


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    first, paths = result.output.strip().splitlines()
    assert first == f"rowcast, version {rowcast.__version__}"
    if _speedups.PURE:
        assert paths == "speedups: none (ROWCAST_PURE is set: the plain paths)"
    elif _speedups.compiled:
        assert paths == "speedups: Python and C"
    else:
        assert paths.startswith("speedups: Python only (the C extension was not built")


@pytest.mark.parametrize(
    "command",
    [[str(Path(sys.executable).with_name("rowcast"))], [sys.executable, "-m", "rowcast"]],
    ids=["script", "python -m"],
)
def test_the_script_and_python_m_run_the_command(command: list[str]) -> None:
    result = subprocess.run(
        [*command, "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"rowcast, version {rowcast.__version__}"


def test_every_command_joins_the_group() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    listed = result.output.partition("Commands:")[2].split()
    for command in ("consume", "demo", "doctor", "events", "relay", "tail", "ui", "uninstall"):
        assert command in listed
    events = CliRunner().invoke(main, ["events", "--help"]).output.partition("Commands:")[2]
    assert [line.split()[0] for line in events.strip().splitlines()] == [
        "init",
        "ls",
        "read",
        "stats",
        "watch",
    ]


def test_demo_prints_every_change_as_a_table() -> None:
    result = CliRunner().invoke(main, ["demo"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    events = [line.split()[1] for line in lines if line[:3].strip().isdigit()]
    assert events == [
        "product_write",
        "product_write",
        "product_write",
        "orders_write",
        "product_update",
        "product_update",
        "product_update",
        "product_delete",
    ]
    assert "8 changes in 5 transactions published; 0 receiver errors." in result.output
    assert "price_cents: 420 -> 378" in result.output


def test_demo_json_lines_are_changes(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    result = CliRunner().invoke(main, ["demo", "--format", "json", "--db", str(db)])
    assert result.exit_code == 0, result.output
    changes = [Change.from_json(line) for line in result.output.splitlines()]
    assert [c.name for c in changes][:3] == ["product_write"] * 3
    assert changes[-1].action == "delete"
    assert changes[-1].before == {"id": 3, "name": "pad", "price_cents": 275, "stock": 12}
    assert {c.source for c in changes} == {"sqlalchemy"}
    assert db.exists()


def test_demo_refuses_an_existing_database(tmp_path: Path) -> None:
    db = tmp_path / "mine.db"
    db.write_bytes(b"precious")
    result = CliRunner().invoke(main, ["demo", "--db", str(db)])
    assert result.exit_code == 2
    assert "exists; give a new file name" in result.output
    assert db.read_bytes() == b"precious"


def test_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["nope"])
    assert result.exit_code == 2
    assert "No such command" in result.output


# a family's schemes that a command's help need not name: in-process, TLS twins, aliases
_UNNAMED = {"memory", "rediss", "amqps", "tls", "postgres", "mariadb", "file", "-"}


@pytest.mark.parametrize(
    ("command", "family"),
    [
        (["relay"], "sink"),
        (["relay"], "checkpoint"),
        (["relay"], "source"),
        (["status"], "checkpoint"),
        (["consume"], "consumer"),
    ],
)
def test_a_commands_help_names_every_scheme_it_takes(command: list[str], family: str) -> None:
    """`rowcast consume --help` named no kafka:// (nor `relay --help` for --to or
    --checkpoint): a user reading it did not know Kafka was there."""
    from rowcast import backends

    result = CliRunner().invoke(main, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for scheme in set(backends.schemes(family)) - _UNNAMED:  # type: ignore[arg-type]
        assert f"{scheme}://" in text or f"{scheme}+" in text, (command, scheme)
