"""The README's quick start runs and prints what the README says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def test_quick_start_prints_what_the_readme_shows(tmp_path: Path) -> None:
    text = README.read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S)
    shown = re.search(r"\nprints\n\n```\n(.*?)```", text, re.S)
    assert code is not None
    assert shown is not None
    script = tmp_path / "quick_start.py"
    script.write_text(code.group(1))
    run = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == shown.group(1)


def test_the_production_configuration_checks(tmp_path: Path) -> None:
    text = README.read_text()
    found = re.search(r"```toml\n(# /etc/rowcast/shop\.toml.*?)```", text, re.S)
    unit = re.search(r"```ini\n(# /etc/systemd/system/rowcast-shop\.service.*?)```", text, re.S)
    assert found is not None
    assert unit is not None
    # the unit runs the file the README shows, with the variables of its environment file
    assert "ExecStart=/usr/local/bin/rowcast relay --config /etc/rowcast/shop.toml" in unit[1]
    assert "EnvironmentFile=/etc/rowcast/shop.env" in unit[1]
    for name in ("mysql.password", "redis.password"):
        secret = tmp_path / name
        secret.write_text(f"{name}-s3cret\n")
        secret.chmod(0o600)
    config = tmp_path / "shop.toml"
    config.write_text(found[1].replace("/etc/rowcast/", f"{tmp_path}/"))
    run = subprocess.run(
        [sys.executable, "-m", "rowcast", "config", "check", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PG_PASSWORD": "pg-s3cret"},
    )
    assert run.returncode == 0, run.stderr
    assert "s3cret" not in run.stdout + run.stderr
    resolved = tomllib.loads(run.stdout)["relay"]
    assert resolved["source"] == "mysql://rowcast:***@db.internal:3306/shop"
    assert resolved["to"] == [
        "postgresql://rowcast:***@events.internal:5432/events?schema=shop",
        "rediss://:***@cache.internal:6380/0?stream=shop:changes",
    ]
    assert resolved["metrics-port"] == 9400


def test_the_production_configuration_reports_every_mistake_at_once(tmp_path: Path) -> None:
    found = re.search(r"```toml\n(# /etc/rowcast/shop\.toml.*?)```", README.read_text(), re.S)
    assert found is not None
    config = tmp_path / "shop.toml"  # no password file written, PG_PASSWORD unset
    config.write_text(found[1].replace("/etc/rowcast/", f"{tmp_path}/"))
    run = subprocess.run(
        [sys.executable, "-m", "rowcast", "config", "check", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "PG_PASSWORD"},
    )
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    said = " ".join(run.stderr.split())
    assert "has 5 mistakes" in said  # the PostgreSQL URLs: to, checkpoint, dead-letter
    assert f"{tmp_path}/mysql.password" in said
    assert "PG_PASSWORD" in said
    assert f"{tmp_path}/redis.password" in said  # was: the to list stopped at its first
