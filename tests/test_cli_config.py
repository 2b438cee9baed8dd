"""``--config FILE`` (relay, consume) and ``rowcast config check FILE``."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from rowcast.cli import main
from rowcast.cli.config_file import config_option, keys

PASSWORD = "hunter2-s3cret"


def invoke(*args: str, **env: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def write(tmp_path: Path, text: str, name: str = "relay.toml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "pw"
    path.write_text(PASSWORD + "\n")
    path.chmod(0o600)
    return path


def test_the_keys_are_the_flags_and_arguments_of_the_command() -> None:
    relay = main.commands["relay"]
    assert list(keys(relay)) == [
        "source",
        "to",
        "checkpoint",
        "tables",
        "allow-empty",  # added to the command since, as snapshot-chunk: nothing to change here
        "from",
        "snapshot",
        "snapshot-chunk",  # added to the command since: the file takes it with no change here
        "batch-size",
        "on-error",
        "dead-letter",
        "stall-after",
        "report-interval",
        "log-format",
        "metrics-port",
        "source-process",
        "server-id",
    ]
    assert list(keys(main.commands["consume"]))[:3] == ["url", "handler", "group"]


def test_check_prints_the_resolved_file_with_defaults_and_passwords_masked(
    tmp_path: Path, secret: Path
) -> None:
    path = write(
        tmp_path,
        f"""\
        # the relay of the shop
        [relay]
        source = "mysql://rowcast:${{RC_PW}}@db:3306/shop"
        to = [
            "-",
            {{ url = "postgresql://rowcast@replica/shop?mode=replicate", password = "${{RC_PW}}" }},
            {{ url = "redis://cache:6379/0", password_file = "{secret}" }},
        ]
        checkpoint = "postgresql://rowcast@replica/shop?password_file={secret}&name=shop"
        tables = "shop.*"
        batch_size = 500
        on-error = ["stop", "dead-letter", "retry"]
        dead-letter = "sqlite:///dead.db"
        source-process = true

        [consume]
        url = "nats://rowcast@broker:4222?password_file={secret}"
        handler = "myapp.handlers:index"
        workers = 4
        backoff = 1
        """,
    )
    result = invoke("config", "check", path, RC_PW=PASSWORD)
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    assert result.output == textwrap.dedent(
        f"""\
        # {path}: valid; resolved, with passwords masked

        [consume]
        url = "nats://rowcast:***@broker:4222"
        handler = "myapp.handlers:index"
        group = "rowcast"  # default
        workers = 4
        batch-size = 100  # default
        attempts = 5  # default
        backoff = 1.0
        dedupe-window = 100000  # default
        log-format = "text"  # default

        [relay]
        source = "mysql://rowcast:***@db:3306/shop"
        to = ["-", "postgresql://rowcast:***@replica/shop?mode=replicate", "redis://:***@cache:6379/0"]
        checkpoint = "postgresql://rowcast:***@replica/shop?name=shop"
        tables = ["shop.*"]
        snapshot = "never"  # default
        batch-size = 500
        on-error = ["stop", "dead-letter", "retry"]
        dead-letter = "sqlite:///dead.db"
        stall-after = 120.0  # default
        report-interval = 5.0  # default
        log-format = "text"  # default
        source-process = true
        """
    )


def test_check_reports_every_mistake_with_its_line_and_the_fix(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        [relay]
        source = "mysql://root@127.0.0.1:3306/test"
        to = ["kafak://broker/topic", "-"]
        batch-sise = 5
        snapshot = "inital"
        metrics-port = "9400"
        source-process = 1
        tables = [1]
        from = ["now"]
        server-id = 0

        [relay.orders]
        source = "mysql://root@127.0.0.1:3306/orders"

        [consum]
        url = "redis://127.0.0.1/0"
        """,
    )
    result = invoke("config", "check", path)
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"error: {path} has 11 mistakes:",
        f"  {path}:1: [relay] checkpoint: missing; rowcast relay requires it (--checkpoint): "
        "give it here (or on the command line, which the check cannot see)",
        f"  {path}:3: [relay] to: no rowcast sink for 'kafak://broker/topic': did you mean "
        "kafka://? the URL must start with -, amqp://, amqps://, kafka://, memory://, nats://, "
        "postgres://, postgresql://, redis://, rediss://, sqlite://, tls://",
        f"  {path}:4: [relay] batch-sise: unknown key; did you mean 'batch-size'? [relay] takes "
        "source, to, checkpoint, tables, allow-empty, from, snapshot, snapshot-chunk, "
        "batch-size, on-error, dead-letter, stall-after, report-interval, "
        "log-format, metrics-port, source-process, server-id",
        f"  {path}:5: [relay] snapshot: 'inital' is not one of 'initial', 'never'.",
        f"  {path}:6: [relay] metrics-port: is an integer, not '9400'",
        f"  {path}:7: [relay] source-process: is true or false, not 1",
        f"  {path}:8: [relay] tables: is a string, not 1",
        f"  {path}:9: [relay] from: takes one value, not a list",
        f"  {path}:10: [relay] server-id: 0 is not in the range 1<=x<=4294967295.",
        f"  {path}:12: [relay] orders: several [relay] tables ([relay.orders]) in one file: "
        "rowcast runs one per process, each with its own file (one exit status, one status "
        "line and one metrics port each; a failing one does not stop the others): write one "
        "file per relay and run each as its own process, e.g. a systemd template unit "
        "rowcast-relay@.service running `rowcast relay --config /etc/rowcast/%i.toml`",
        f"  {path}:15: [consum]: no such command takes a file; did you mean [consume]? tables: "
        "[consume], [relay]",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[relay\n", "not valid TOML: Expected ']' at the end of a table declaration (at line 1"),
        ("source = 'x'\n", ":1: source: a key outside any table; put it under the table of"),
        ("[[relay]]\nsource = 'x'\n[[relay]]\n", ":1: [[relay]]: several [[relay]] tables in"),
        ("[relay]\nconfig = 'other.toml'\n", ":2: [relay] config: a config file cannot name"),
        ("[relay]\nto = [{ url = '-', pasword = 'x' }]\n", "to.pasword: unknown key; did you"),
        ("[relay]\nto = [{ password = 'x' }]\n", "to: a URL table needs url ="),
        ("[relay]\nsource = 'mysql://h/${RC_NOPE}'\n", "environment variable RC_NOPE is not"),
        ("", "configures nothing: add a table for one of [consume], [relay]"),
    ],
)
def test_check_refuses(tmp_path: Path, text: str, message: str) -> None:
    result = invoke("config", "check", write(tmp_path, text))
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_a_password_file_others_may_read_is_refused_with_its_line(
    tmp_path: Path, secret: Path
) -> None:
    secret.chmod(0o644)
    path = write(
        tmp_path,
        f"""\
        [relay]
        source = "mysql://root@127.0.0.1/test"
        checkpoint = {{ url = "postgresql://rowcast@db/app", password_file = "{secret}" }}
        """,
    )
    result = invoke("config", "check", path)
    assert result.exit_code == 2
    assert f"{path}:3: [relay] checkpoint: password file" in result.output
    assert f"run chmod 600 {secret}" in result.output
    assert PASSWORD not in result.output


def test_a_missing_file_exits_2(tmp_path: Path) -> None:
    result = invoke("relay", "--config", str(tmp_path / "none.toml"))
    assert result.exit_code == 2
    assert f"error: config file {str(tmp_path / 'none.toml')!r} cannot be read" in result.output


def test_relay_runs_from_the_file_and_the_flags_win(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""\
        [relay]
        source = "mysql://root@127.0.0.1:1/test"
        to = ["-"]
        checkpoint = "{tmp_path / "pos"}"
        batch-size = 0
        """,
    )
    bad = invoke("relay", "--config", path)  # the file's mistake is reported with its line
    assert bad.exit_code == 2
    assert f"error: {path}:5: [relay] batch-size: 0 is not in the range" in bad.output
    path = write(tmp_path, Path(path).read_text().replace("batch-size = 0", "batch-size = 5"))
    unreachable = invoke("relay", "--config", path)
    assert unreachable.exit_code == 2
    assert "mysql://root@127.0.0.1:1/test: cannot reach the server" in unreachable.output
    # a flag replaces the file's value: the source argument, and --to
    flagged = invoke("relay", "--config", path, "ftp://nowhere/x", "--to", "pulsar://h/t")
    assert flagged.exit_code == 2
    assert "no rowcast sink for 'pulsar://h/t'" in flagged.output  # --to is checked first
    flagged = invoke("relay", "ftp://nowhere/x", "--config", path)
    assert flagged.exit_code == 2
    assert "no rowcast source for 'ftp://nowhere/x'" in flagged.output


def test_a_file_without_the_commands_table_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[consume]\nurl = "redis://127.0.0.1/0"\n')
    result = invoke("relay", "--config", path)
    assert result.exit_code == 2
    assert f"error: {path}: no [relay] table for rowcast relay (its tables: [consume])" in (
        result.output
    )


def test_consume_runs_from_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        [consume]
        url = "pulsar://h/t"
        handler = "rowcast.testing.consume:record"
        """,
    )
    result = invoke("consume", "--config", path)
    assert result.exit_code == 2
    assert "no rowcast consumer for 'pulsar://h/t'" in result.output


def test_any_command_can_take_a_file(tmp_path: Path) -> None:
    # what `rowcast status` or `rowcast ui` would do: nothing to write but the decorator
    seen: dict[str, Any] = {}

    @click.command("status")
    @config_option
    @click.argument("checkpoint_url")
    @click.option("--interval", type=click.FloatRange(0.1), default=1.0)
    @click.option("--watch", is_flag=True)
    def status(checkpoint_url: str, interval: float, watch: bool) -> None:
        seen.update(checkpoint=checkpoint_url, interval=interval, watch=watch)

    path = write(tmp_path, '[status]\ncheckpoint = "relay.pos"\ninterval = 2\nwatch = true\n')
    result = CliRunner().invoke(status, ["--config", path, "--interval", "3"])
    assert result.exit_code == 0, result.output
    assert seen == {"checkpoint": "relay.pos", "interval": 3.0, "watch": True}
