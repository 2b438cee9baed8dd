"""No command prints a password: every command, with the password in every place the
command line takes it (in the URL, as ``${VARIABLE}``, in a password file, in a
``--config`` file), on the paths that work and on those that fail (a wrong password,
an unreachable server, a bad option). Every line of output is read: stdout, stderr,
the log records, and the traceback (with its causes) of every error reported.

The commands that run until stopped (a relay delivering, its JSON log, status lines
and metrics; a consumer; ``events watch``) are in test_cli_secrets_running.py.
"""

from __future__ import annotations

import logging
import signal
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from rowcast.cli import group, main
from tests.secret_world import PLACES, SECRET, VARIABLE, World, leaks, world

pytestmark = pytest.mark.server

HANDLER = "rowcast.testing.consume:record"


@pytest.fixture(scope="module")
def the_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with world(tmp_path_factory.mktemp("secrets")) as w:
        yield w


Scenario = Callable[[World, str, Path], list[str]]


def _relay(w: World, place: str, tmp: Path, *args: str, source: str | None = None) -> list[str]:
    source = source or w.url(w.mysql, place)
    rest = list(args)
    if "--checkpoint" not in rest:
        rest += ["--checkpoint", str(tmp / "pos")]
    if "--to" not in rest:
        rest += ["--to", "-"]
    return ["relay", source, *rest]


def _config(w: World, place: str, tmp: Path, *, mistakes: str = "") -> Path:
    """A configuration file with the password in `place` and in both URL tables."""
    return w.file(
        f"relay-{place}.toml",
        f"""\
        [relay]
        source = "{w.url(w.mysql, place)}"
        to = [
            "{w.url(w.store, place)}",
            {{ url = "{w.nats}", password = "${{{VARIABLE}}}" }},
            {{ url = "{w.redis}", password_file = "{w.password_file}" }},
        ]
        checkpoint = "{w.url(w.postgres + "?name=rcsec", place)}"
        tables = ["test.{w.table}"]
        {mistakes}

        [consume]
        url = "{w.url(w.nats, place)}"
        handler = "{HANDLER}"
        """,
    )


SCENARIOS: dict[str, tuple[Scenario, tuple[int, ...], str]] = {
    # doctor
    "doctor-mysql": (lambda w, p, t: ["doctor", w.url(w.mysql, p)], (0,), "checks passed"),
    "doctor-mysql-wrong-password": (
        lambda w, p, t: ["doctor", w.url(w.mysql_wrong, p)],
        (2,),
        "access denied",
    ),
    "doctor-mysql-unreachable": (
        lambda w, p, t: ["doctor", w.url(f"mysql://u@127.0.0.1:{w.closed}/test", p)],
        (2,),
        "cannot reach",
    ),
    "doctor-mysql-bad-port": (
        lambda w, p, t: ["doctor", w.url("mysql://u@127.0.0.1:99999/test", p)],
        (2,),
        "port",
    ),
    "doctor-mysql-no-host": (
        lambda w, p, t: ["doctor", w.url("mysql://u@:3306/test", p)],
        (2,),
        "",
    ),
    "doctor-postgres": (lambda w, p, t: ["doctor", w.url(w.postgres, p)], (0, 1), "checks"),
    "doctor-postgres-unreachable": (
        lambda w, p, t: ["doctor", w.url(f"postgresql://u@127.0.0.1:{w.closed}/test", p)],
        (2,),
        "cannot reach",
    ),
    "doctor-postgres-no-database": (
        lambda w, p, t: ["doctor", w.url("postgresql://postgres@127.0.0.1/rcsec_none", p)],
        (2,),
        "does not exist",
    ),
    "doctor-postgres-bad-option": (
        lambda w, p, t: ["doctor", w.url(w.postgres + "?bogus=1", p)],
        (2,),
        "bogus",
    ),
    "doctor-postgres-malformed": (
        lambda w, p, t: ["doctor", w.url("postgresql://postgres@[::1/test", p)],
        (2,),
        "",
    ),
    "doctor-mysql-malformed": (
        lambda w, p, t: ["doctor", w.url("mysql://u@[::1/test", p)],
        (2,),
        "",
    ),
    "doctor-no-such-scheme": (
        lambda w, p, t: ["doctor", w.url("ftp://u@127.0.0.1/x", p)],
        (2,),
        "no rowcast source",
    ),
    # tail
    "tail-mysql": (
        lambda w, p, t: ["tail", w.url(w.mysql, p), "--to", "now", "-t", f"test.{w.table}"],
        (0,),
        "tailing",
    ),
    "tail-mysql-wrong-password": (
        lambda w, p, t: ["tail", w.url(w.mysql_wrong, p), "--to", "now"],
        (2,),
        "access denied",
    ),
    "tail-mysql-bad-option": (
        lambda w, p, t: ["tail", w.url(w.mysql, p), "--from", "garbage"],
        (2,),
        "garbage",
    ),
    "tail-postgres": (
        lambda w, p, t: ["tail", w.url(w.postgres, p), "--to", "now", "-t", "nothing_rcsec"],
        (0, 2),
        "",
    ),
    "tail-postgres-unreachable": (
        lambda w, p, t: ["tail", w.url(f"postgresql://u@127.0.0.1:{w.closed}/test", p)],
        (2,),
        "cannot reach",
    ),
    # relay, failing before anything is read
    "relay-source-wrong-password": (
        lambda w, p, t: _relay(w, p, t, source=w.url(w.mysql_wrong, p)),
        (2,),
        "access denied",
    ),
    "relay-source-unreachable": (
        lambda w, p, t: _relay(w, p, t, source=w.url(f"mysql://u@127.0.0.1:{w.closed}/x", p)),
        (2,),
        "cannot reach",
    ),
    "relay-source-bad-option": (
        lambda w, p, t: _relay(w, p, t, "--server-id", "7", source=w.url(w.postgres, p)),
        (2,),
        "--server-id",
    ),
    "relay-sink-redis-wrong-password": (
        lambda w, p, t: _relay(w, p, t, "--to", w.url(w.redis_wrong, p)),
        (2,),
        "",
    ),
    "relay-sink-nats-wrong-user": (
        lambda w, p, t: _relay(w, p, t, "--to", w.url(w.nats_wrong, p)),
        (2,),
        "",
    ),
    "relay-sink-amqp-wrong-password": (
        lambda w, p, t: _relay(w, p, t, "--to", w.url(w.amqp_wrong, p)),
        (2,),
        "",
    ),
    "relay-sink-postgres-unreachable": (
        lambda w, p, t: _relay(
            w, p, t, "--to", w.url(f"postgresql://u@127.0.0.1:{w.closed}/test", p)
        ),
        (2,),
        "",
    ),
    "relay-sink-postgres-no-database": (
        lambda w, p, t: _relay(
            w, p, t, "--to", w.url("postgresql://postgres@127.0.0.1/rcsec_none", p)
        ),
        (2,),
        "rcsec_none",
    ),
    "relay-sink-postgres-malformed": (
        lambda w, p, t: _relay(w, p, t, "--to", w.url("postgresql://postgres@[::1/test", p)),
        (2,),
        "",
    ),
    "relay-sink-replica-malformed": (
        lambda w, p, t: _relay(
            w, p, t, "--to", w.url("postgresql://postgres@[::1/test?mode=replicate", p)
        ),
        (2,),
        "",
    ),
    "relay-checkpoint-postgres-malformed": (
        lambda w, p, t: _relay(w, p, t, "--checkpoint", w.url("postgresql://p@[::1/test", p)),
        (2,),
        "",
    ),
    "relay-sink-redis-malformed": (
        lambda w, p, t: _relay(w, p, t, "--to", w.url("redis://u@[::1/0", p)),
        (2,),
        "",
    ),
    "relay-sink-replica-bad-option": (
        lambda w, p, t: _relay(w, p, t, "--to", w.url(w.postgres + "?mode=replicate&bogus=1", p)),
        (2,),
        "bogus",
    ),
    "relay-sink-mysql-replica-wrong-password": (
        lambda w, p, t: _relay(w, p, t, "--to", w.url(w.mysql_wrong + "?mode=replicate", p)),
        (2,),
        "",
    ),
    "relay-checkpoint-redis-wrong-password": (
        lambda w, p, t: _relay(w, p, t, "--checkpoint", w.url(w.redis_wrong, p)),
        (2,),
        "",
    ),
    "relay-checkpoint-mysql-wrong-password": (
        lambda w, p, t: _relay(w, p, t, "--checkpoint", w.url(w.mysql_wrong, p)),
        (2,),
        "",
    ),
    "relay-checkpoint-postgres-unreachable": (
        lambda w, p, t: _relay(
            w, p, t, "--checkpoint", w.url(f"postgresql://u@127.0.0.1:{w.closed}/test", p)
        ),
        (2,),
        "",
    ),
    "relay-dead-letter-unreachable": (
        lambda w, p, t: _relay(
            w,
            p,
            t,
            "--on-error",
            "dead-letter",
            "--dead-letter",
            w.url(f"postgresql://u@127.0.0.1:{w.closed}/test", p),
        ),
        (2,),
        "",
    ),
    "relay-bad-batch-size": (
        lambda w, p, t: _relay(w, p, t, "--batch-size", "0"),
        (2,),
        "--batch-size",
    ),
    "relay-config-unreachable-checkpoint": (
        lambda w, p, t: [
            "relay",
            "--config",
            str(_config(w, p, t)),
            "--checkpoint",
            w.url(f"postgresql://u@127.0.0.1:{w.closed}/test", p),
        ],
        (2,),
        "",
    ),
    # consume
    "consume-redis-wrong-password": (
        lambda w, p, t: [
            "consume",
            w.url(w.redis_wrong + "?stream=rcsec", p),
            "--handler",
            HANDLER,
        ],
        (2,),
        "",
    ),
    "consume-nats-wrong-user": (
        lambda w, p, t: ["consume", w.url(w.nats_wrong, p), "--handler", HANDLER],
        (2,),
        "",
    ),
    "consume-amqp-wrong-password": (
        lambda w, p, t: ["consume", w.url(w.amqp_wrong, p), "--handler", HANDLER],
        (2,),
        "",
    ),
    "consume-bad-option": (
        lambda w, p, t: ["consume", w.url(w.nats + "?bogus=1", p), "--handler", HANDLER],
        (2,),
        "bogus",
    ),
    "consume-bad-handler": (
        lambda w, p, t: ["consume", w.url(w.nats, p), "--handler", "rcsec_nothing:f"],
        (2,),
        "rcsec_nothing",
    ),
    # events
    "events-init": (lambda w, p, t: ["events", "init", w.url(w.store, p)], (0,), "ready"),
    "events-ls": (lambda w, p, t: ["events", "ls", "--url", w.url(w.store, p)], (0,), ""),
    "events-read": (
        lambda w, p, t: ["events", "read", "@all", "--url", w.url(w.store, p)],
        (0,),
        "",
    ),
    "events-stats": (
        lambda w, p, t: ["events", "stats", "--url", w.url(w.store, p)],
        (0,),
        "streams",
    ),
    "events-stats-json": (
        lambda w, p, t: ["events", "stats", "--format", "json", "--url", w.url(w.store, p)],
        (0,),
        "",
    ),
    "events-ls-no-store": (
        lambda w, p, t: ["events", "ls", "--url", w.url(w.postgres + "?schema=rcsec_none", p)],
        (2,),
        "",
    ),
    "events-ls-unreachable": (
        lambda w, p, t: [
            "events",
            "ls",
            "--url",
            w.url(f"postgresql://u@127.0.0.1:{w.closed}/x", p),
        ],
        (2,),
        "",
    ),
    "events-ls-malformed": (
        lambda w, p, t: ["events", "ls", "--url", w.url("postgresql://postgres@[::1/test", p)],
        (2,),
        "",
    ),
    "consume-malformed": (
        lambda w, p, t: ["consume", w.url("nats://u@[::1", p), "--handler", HANDLER],
        (2,),
        "",
    ),
    "tail-outbox": (
        lambda w, p, t: ["tail", "outbox+" + w.url(w.postgres, p), "--to", "now"],
        (0,),
        "",
    ),
    "events-init-unreachable": (
        lambda w, p, t: ["events", "init", w.url(f"postgresql://u@127.0.0.1:{w.closed}/x", p)],
        (2,),
        "",
    ),
    "events-init-sqlite-schema": (
        lambda w, p, t: ["events", "init", w.url(w.postgres, p) + "&bogus=1"],
        (2,),
        "",
    ),
    # uninstall
    "uninstall-postgres": (lambda w, p, t: ["uninstall", w.url(w.postgres, p)], (0,), ""),
    "uninstall-postgres-unreachable": (
        lambda w, p, t: ["uninstall", w.url(f"postgresql://u@127.0.0.1:{w.closed}/x", p)],
        (2,),
        "",
    ),
    "uninstall-mysql": (lambda w, p, t: ["uninstall", w.url(w.mysql, p)], (0,), "creates nothing"),
    # config check
    "config-check": (
        lambda w, p, t: ["config", "check", str(_config(w, p, t))],
        (0,),
        "***",
    ),
    "config-check-mistakes": (
        lambda w, p, t: [
            "config",
            "check",
            str(_config(w, p, t, mistakes='batch-sise = 5\nsnapshot = "inital"')),
        ],
        (2,),
        "batch-size",
    ),
}


@pytest.fixture
def invoke(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> Any:
    """Runs a command in this process; returns (exit status, every line it showed)."""
    report = group.print_error

    def loud(message: object) -> None:  # every error reported, with its traceback
        traceback.print_exc()
        report(message)

    monkeypatch.setattr(group, "print_error", loud)
    caplog.set_level(logging.INFO)

    def too_long(signum: int, frame: Any) -> None:
        raise TimeoutError("the command was still running after 60 s")

    def run(args: list[str]) -> tuple[int, str]:
        previous = signal.signal(signal.SIGALRM, too_long)
        signal.alarm(60)
        try:
            result = CliRunner().invoke(main, args, env={VARIABLE: SECRET, "ROWCAST_DEBUG": "1"})
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        text = result.output
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            text += "".join(traceback.format_exception(*result.exc_info))
        return result.exit_code, text + caplog.text

    return run


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_no_command_prints_the_password(
    the_world: World, name: str, place: str, invoke: Any, tmp_path: Path
) -> None:
    scenario, statuses, shown = SCENARIOS[name]
    if "amqp" in name and not the_world.amqp_up:
        pytest.skip("no RabbitMQ")
    status, text = invoke(scenario(the_world, place, tmp_path))
    assert leaks(text) == [], text
    assert status in statuses, text
    assert shown in text, text
