"""``rowcast ui``: checked before it listens (exit 2 and one message), then served until SIGINT."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
from click.testing import CliRunner

from rowcast.cli import main
from rowcast.store import EventStore

from .conftest import keep, product_changes


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["ui", *args])
    return result.exit_code, result.output


def test_a_store_that_does_not_exist_is_not_created(tmp_path: Path) -> None:
    code, output = _run("--store", f"sqlite:///{tmp_path}/none.db")
    assert code == 2
    assert "no rowcast event store" in output
    assert "Traceback" not in output
    assert not (tmp_path / "none.db").exists()


def test_another_address_without_a_token_is_refused(tmp_path: Path) -> None:
    code, output = _run("--store", f"sqlite:///{tmp_path}/e.db", "--host", "0.0.0.0")
    assert code == 2
    assert "--token" in output


def test_a_port_in_use_is_named(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/e.db"
    EventStore(url).close()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        code, output = _run("--store", url, "--port", str(taken.getsockname()[1]))
    assert code == 2
    assert "cannot listen on 127.0.0.1" in output
    assert "--port" in output


def test_it_serves_until_interrupted_and_prints_no_secret(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/e.db"
    with EventStore(url) as store:
        for change in product_changes():
            keep(store, change)
    env = {**os.environ, "ROWCAST_UI_TOKEN": "a-token-nobody-guesses"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rowcast",
            "ui",
            "--store",
            url,
            "--port",
            "0",
            "--source",
            "sqlite:///" + str(tmp_path / "app.db"),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
        assert first.startswith("rowcast console on http://127.0.0.1:"), first
        base = first.split(" on ", 1)[1].strip()
        answer = httpx.get(
            f"{base}streams", headers={"authorization": "Bearer a-token-nobody-guesses"}
        )
        assert answer.status_code == 200
        assert "shop.product-1" in answer.text
    finally:
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=20)
    assert process.returncode == 0, rest
    assert "a-token-nobody-guesses" not in first + rest
    assert "Traceback" not in rest


def test_the_demo_shows_its_changes_in_the_console() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "rowcast", "demo", "--ui", "--port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
        assert first.startswith("rowcast console on http://127.0.0.1:"), first
        base = first.split(" on ", 1)[1].strip()
        streams = httpx.get(f"{base}streams?prefix=main.product-")
        assert [f"main.product-{n}" in streams.text for n in (1, 2, 3)] == [True] * 3
        row = httpx.get(f"{base}rows/main.product-2")
        assert row.status_code == 200
        assert "price_cents" in row.text
    finally:
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=20)
    assert process.returncode == 0, rest
