"""No traceback reaches a user: every command (tail, relay, consume, events, doctor, demo,
uninstall, config, ui, status, dlq), given a bad path, URL or option, ends at once with
a short message that names the problem and its fix, and a non-zero status.

Each case runs the real command (`CliRunner`: in this process, so ~100 cases take
seconds) from a fresh directory holding ``app.db`` (an app's SQLite database), ``adir/``
(a directory) and ``afile`` (a plain file); ``{missing}`` is a directory that does not
exist, ``{closed}`` a loopback port nothing listens on. A case that does not end within
`deadline` seconds fails (bad input must never start a command that runs on).
"""

from __future__ import annotations

import os
import shlex
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from rowcast.cli import main
from rowcast.testing.sink import closed_port
from tests.conftest import deadline, require_redis, require_server
from tests.sinks import require_nats, require_rabbitmq

CLOSED = closed_port()
RABBIT = "amqp://guest:guest@127.0.0.1"
HANDLER = "--handler rowcast.testing.consume:record"
RELAY = "relay sqlite:///app.db --to - --checkpoint c.pos"  # every part good: one is changed


@dataclass(frozen=True)
class Case:
    args: str  # the command line after `rowcast`, with {closed} and {missing}
    message: str  # a part of the one-paragraph message: the problem or its fix
    needs: str = ""  # a server the case reaches: postgresql, mysql, redis, nats, rabbitmq
    status: int = 2
    lines: int = 4  # at most: one paragraph (a usage error adds click's two usage lines)


CASES = [
    # ------------------------------------------------------------ an unknown scheme
    Case("tail foo://x", "no rowcast source for 'foo://x': the URL must start with"),
    Case("doctor foo://x", "no rowcast source for 'foo://x'"),
    Case("backfill mysq://root@127.0.0.1/x --status", "did you mean mysql://? the URL must"),
    Case("doctor redis://127.0.0.1:{closed}/0", "no rowcast source for 'redis://"),
    Case("relay foo://x --to - --checkpoint c.pos", "no rowcast source for 'foo://x'"),
    Case("relay sqlite:///app.db --to foo://x --checkpoint c.pos", "no rowcast sink for"),
    Case("relay sqlite:///app.db --to - --checkpoint foo://x", "no checkpoint backend for"),
    Case(f"{RELAY} --on-error dead-letter --dead-letter foo://x", "no rowcast sink for"),
    Case(f"consume foo://x {HANDLER}", "no rowcast consumer for 'foo://x'"),
    Case("events ls --url foo://x", "no event store for 'foo://x'"),
    Case("events read s --url foo://x", "no event store for 'foo://x'"),
    Case("events stats --url foo://x", "no event store for 'foo://x'"),
    Case("events watch --url foo://x", "no event store for 'foo://x'"),
    Case("events init foo://x", "no event store for 'foo://x'"),
    Case("uninstall foo://x", "takes a sqlite://, postgresql:// or mysql:// URL"),
    Case("uninstall mysql://root@127.0.0.1:{closed}/x", "cannot reach the server"),
    # ------------------------------------------------------------ paths that are not there
    Case("tail sqlite:///{missing}/app.db", "no SQLite database at"),
    Case("doctor sqlite:///{missing}/app.db", "no SQLite database at"),
    Case("uninstall sqlite:///{missing}/app.db", "no SQLite database at"),
    Case("relay sqlite:///{missing}/app.db --to - --checkpoint c.pos", "no SQLite database at"),
    Case("tail outbox+sqlite:///{missing}/app.db", "no SQLite database at"),
    Case("doctor outbox+sqlite:///{missing}/app.db", "no SQLite database at"),
    Case("relay outbox+sqlite:///{missing}/app.db --to - --checkpoint c.pos", "no SQLite data"),
    Case("events ls --url sqlite:///{missing}/ev.db", "no rowcast event store in"),
    Case("events read @all --url sqlite:///{missing}/ev.db", "rowcast events init"),
    Case("events stats --url sqlite:///{missing}/ev.db", "no rowcast event store in"),
    Case("events watch --url sqlite:///{missing}/ev.db", "no rowcast event store in"),
    Case("events ls --url sqlite:///app.db", "its database has no rowcast_events table"),
    Case("demo --db {missing}/x.db", "the directory {missing} does not exist"),
    # ------------------------------------------------------------ a directory, a file
    Case("demo --db afile/x.db", "cannot create the file (Not a directory)"),
    Case("demo --db app.db", "exists; give a new file name"),
    Case("demo --db adir", "is a directory"),
    Case("tail sqlite:///adir", "names the directory"),
    Case("doctor sqlite:///adir", "names the directory"),
    Case("uninstall sqlite:///adir", "names the directory"),
    Case("events ls --url sqlite:///adir", "names the directory"),
    Case("doctor outbox+sqlite:///adir", "names the directory"),
    Case("relay sqlite:///app.db --to - --checkpoint sqlite:///adir", "is a directory; give a"),
    Case("relay sqlite:///app.db --to - --checkpoint adir", "is a directory; give a file"),
    Case("relay sqlite:///app.db --to - --checkpoint sqlite:///afile/c.db", "is a file, not a"),
    Case("relay sqlite:///app.db --to - --checkpoint afile/c.pos", "is a file, not a directory"),
    Case("relay sqlite:///app.db --to - --checkpoint afile/x/c.pos", "is a file, not a dir"),
    # a checkpoint in a directory that does not exist: a typo more likely than intent
    # (was: the directory made, the relay running)
    Case(
        "relay sqlite:///app.db --to - --checkpoint sqlite:///{missing}/c.db",
        "the directory '{missing}' does not exist; create it (mkdir -p {missing})",
    ),
    Case(
        "relay sqlite:///app.db --to - --checkpoint {missing}/c.pos",
        "the directory '{missing}' does not exist; create it (mkdir -p {missing})",
    ),
    Case(
        "relay sqlite:///app.db --to - --checkpoint file://{missing}/c.pos",
        "the directory '{missing}' does not exist; create it (mkdir -p {missing})",
    ),
    Case(  # was: "cannot connect ... is the server running"
        "relay sqlite:///app.db --to - --checkpoint sqlite:///~/c.db",
        "a sqlite:/// URL does not expand '~'; give the whole path: sqlite:////",
    ),
    Case(
        f"consume redis://127.0.0.1:{{closed}}/0?stream=x {HANDLER} --report {{missing}}/r.pos",
        "--report {missing}/r.pos: the directory '{missing}' does not exist",
    ),
    Case("relay sqlite:///app.db --to sqlite:///adir --checkpoint c.pos", "names the directory"),
    Case("relay sqlite:///app.db --to sqlite:///afile/e.db --checkpoint c.pos", "is a file, not"),
    Case(f"{RELAY} --on-error dead-letter --dead-letter sqlite:///adir", "names the directory"),
    Case("events init sqlite:///afile/ev.db", "is a file, not a directory"),
    # ------------------------------------------------------------ a typo in an option's name
    Case("tail sqlite:///app.db?tabels=t", "unknown option 'tabels' (in tabels=t); did you mean"),
    Case("doctor sqlite:///app.db?tabels=t", "did you mean 'tables'?"),
    Case("uninstall sqlite:///app.db?tabels=t", "did you mean 'tables'?"),
    Case("relay sqlite:///app.db?strat=now --to - --checkpoint c.pos", "did you mean 'start'?"),
    Case("tail mysql://root@127.0.0.1:{closed}/test?tabels=x", "did you mean 'tables'?"),
    Case(
        "relay mysql://root@127.0.0.1:{closed}/test?serverid=5 --to - --checkpoint c.pos",
        "unknown option 'serverid' (in serverid=5); did you mean 'server_id'?",
    ),
    Case("tail postgresql://127.0.0.1:{closed}/test?slott=x", "did you mean 'slot'?"),
    Case("doctor postgresql://127.0.0.1:{closed}/test?publicaton=p", "did you mean 'publication'"),
    Case(
        "relay postgresql://127.0.0.1:{closed}/test?sslmod=require --to - --checkpoint c.pos",
        "unknown option 'sslmod' (in sslmod=require); did you mean 'sslmode'?",
    ),
    Case("tail outbox+sqlite:///app.db?timout=3", "did you mean 'timeout'?"),
    Case("doctor outbox+postgresql://127.0.0.1:{closed}/t?sslmod=x", "did you mean 'sslmode'?"),
    Case(
        "relay sqlite:///app.db --to sqlite:///ev.db?synchronus=full --checkpoint c.pos",
        "unknown option 'synchronus' (in synchronus=full); did you mean 'synchronous'?",
    ),
    Case(
        "relay sqlite:///app.db --to redis://127.0.0.1:{closed}/0?strem=x --checkpoint c.pos",
        "unknown option 'strem' (in strem=x); did you mean 'stream'?",
    ),
    Case(
        "relay sqlite:///app.db --to nats://127.0.0.1:{closed}?prefx=x --checkpoint c.pos",
        "unknown option 'prefx' (in prefx=x); did you mean 'prefix'?",
    ),
    Case(
        f"relay sqlite:///app.db --to {RABBIT}:{{closed}}/%2F?exchang=x --checkpoint c.pos",
        "unknown option 'exchang' (in exchang=x); did you mean 'exchange'?",
    ),
    Case(
        "relay sqlite:///app.db --to postgresql://127.0.0.1:{closed}/t?mode=replicate&schem=x"
        " --checkpoint c.pos",
        "unknown option 'schem' (in schem=x); did you mean 'schema'?",
    ),
    Case(
        "relay sqlite:///app.db --to postgresql://127.0.0.1:{closed}/t?pool_maxx=3"
        " --checkpoint c.pos",
        "unknown option 'pool_maxx' (in pool_maxx=3); did you mean 'pool_max'?",
    ),
    Case("events ls --url postgresql://127.0.0.1:{closed}/t?schem=x", "did you mean 'schema'?"),
    Case("events ls --url sqlite:///ev.db?synchronus=full", "did you mean 'synchronous'?"),
    Case(
        "relay sqlite:///app.db --to - --checkpoint sqlite:///c.db?nme=x",
        "unknown option 'nme' (in nme=x); did you mean 'name'?",
    ),
    Case(
        "relay sqlite:///app.db --to - --checkpoint redis://127.0.0.1:{closed}/0?sockettimeout=1",
        "did you mean 'socket_timeout'?",
    ),
    Case(
        "relay sqlite:///app.db --to - --checkpoint mysql://root@127.0.0.1:{closed}/t?charst=x",
        "unknown option 'charst' (in charst=x); did you mean 'charset'?",
    ),
    Case(
        "relay sqlite:///app.db --to - --checkpoint postgresql://127.0.0.1:{closed}/t?sslmod=x",
        "did you mean 'sslmode'?",
    ),
    Case(
        f"{RELAY} --on-error dead-letter --dead-letter sqlite:///dead.db?timout=1",
        "did you mean 'timeout'?",
    ),
    Case(f"consume redis://127.0.0.1:{{closed}}/0?strem=x {HANDLER}", "did you mean 'stream'?"),
    Case(f"consume nats://127.0.0.1:{{closed}}?strem=x {HANDLER}", "did you mean 'stream'?"),
    Case(f"consume {RABBIT}:{{closed}}/%2F?queu=x {HANDLER}", "did you mean 'queue'?"),
    Case(f"consume redis://127.0.0.1:{{closed}}/0?creat=true {HANDLER}", "did you mean 'create'"),
    # ------------------------------------------------------------ a typo in an option's value
    Case(
        "relay sqlite:///app.db --to sqlite:///ev.db?mode=replicat --checkpoint c.pos",
        "mode=replicat: unknown mode; use broker or replicate",
    ),
    Case(
        "relay sqlite:///app.db --to sqlite:///r.db?mode=replicate&create=maybe --checkpoint c.pos",
        "create must be true or false, not 'maybe'",
    ),
    Case(
        "relay sqlite:///app.db --to sqlite:///ev.db?synchronous=fast --checkpoint c.pos",
        "synchronous must be 'full' or 'normal', not 'fast'",
    ),
    Case(
        "relay sqlite:///app.db --to redis://127.0.0.1:{closed}/0?maxlen=lots --checkpoint c.pos",
        "maxlen",
    ),
    Case(
        "relay sqlite:///app.db --to nats://127.0.0.1:{closed}?timeout=soon --checkpoint c.pos",
        "timeout must be a positive number, not 'soon'",
    ),
    Case(
        f"relay sqlite:///app.db --to {RABBIT}:{{closed}}/%2F?heartbeat=often --checkpoint c.pos",
        "Invalid heartbeat value 'often'",
    ),
    Case("tail sqlite:///app.db?retain=forever", "retain"),
    Case(
        "tail postgresql://127.0.0.1:{closed}/t?replica_identity=sometimes",
        "replica_identity",
    ),
    Case("tail postgresql://127.0.0.1:{closed}/t?slot=Bad-Name", "a slot name is 1-63 characters"),
    Case(f"consume nats://127.0.0.1:{{closed}}?ack_wait=0 {HANDLER}", "ack_wait must be a pos"),
    Case(f"consume redis://127.0.0.1:{{closed}}/0?claim_after=-1 {HANDLER}", "claim_after must"),
    Case(f"consume {RABBIT}:{{closed}}/%2F?prefetch=many {HANDLER}", "prefetch must be a pos"),
    Case(f"consume redis://127.0.0.1:{{closed}}/0?create=maybe {HANDLER}", "create is true or"),
    Case(f"{RELAY[:-5]} 'sqlite:///c.db?name=bad name'", "a checkpoint name is 1-200 characters"),
    Case("tail sqlite:///app.db --from bogus", "bad SQLite source start 'bogus'"),
    Case("tail sqlite:///app.db --to bogus", "bad SQLite source end 'bogus'"),
    Case("tail mysql://root@127.0.0.1:{closed}/test --from bogus", "bad binlog position 'bogus'"),
    Case("tail postgresql://127.0.0.1:{closed}/t --from bogus", "bad PostgreSQL position 'bogus'"),
    Case(f"{RELAY} --from bogus", "bad SQLite source start 'bogus'"),
    # ------------------------------------------------------------ unreachable: a closed port
    Case("tail mysql://root@127.0.0.1:{closed}/test", "cannot reach the server"),
    Case("tail postgresql://127.0.0.1:{closed}/test", "cannot reach the server"),
    Case("tail outbox+postgresql://127.0.0.1:{closed}/test", "cannot use the outbox database"),
    Case("doctor mysql://root@127.0.0.1:{closed}/test", "cannot reach the server"),
    Case("doctor postgresql://127.0.0.1:{closed}/test", "cannot reach the server"),
    Case("doctor outbox+mysql://root@127.0.0.1:{closed}/t", "cannot use the outbox database"),
    Case("uninstall postgresql://127.0.0.1:{closed}/test", "cannot reach the server"),
    Case(
        "relay mysql://root@127.0.0.1:{closed}/test --to - --checkpoint c.pos",
        "cannot reach the server",
    ),
    Case(
        "relay sqlite:///app.db --to redis://127.0.0.1:{closed}/0?timeout=1 --checkpoint c.pos",
        "Connection refused",
    ),
    Case(
        "relay sqlite:///app.db --to nats://127.0.0.1:{closed}?timeout=1 --checkpoint c.pos",
        "cannot connect",
    ),
    Case(
        f"relay sqlite:///app.db --to {RABBIT}:{{closed}}/%2F?timeout=1 --checkpoint c.pos",
        "Connection refused",
    ),
    Case(
        "relay sqlite:///app.db --to postgresql://127.0.0.1:{closed}/t --checkpoint c.pos",
        "cannot connect",
    ),
    Case(
        "relay sqlite:///app.db --to postgresql://127.0.0.1:{closed}/t?mode=replicate"
        " --checkpoint c.pos",
        "Connection refused",
    ),
    Case(
        "relay sqlite:///app.db --to - --checkpoint redis://127.0.0.1:{closed}/0",
        "Connection refused",
    ),
    Case(
        "relay sqlite:///app.db --to - --checkpoint postgresql://127.0.0.1:{closed}/t",
        "cannot connect",
    ),
    Case(
        "relay sqlite:///app.db --to - --checkpoint mysql://root@127.0.0.1:{closed}/t",
        "is the server running",
    ),
    Case(f"consume redis://127.0.0.1:{{closed}}/0?timeout=1 {HANDLER}", "cannot reach the server"),
    Case(f"consume nats://127.0.0.1:{{closed}}?timeout=1 {HANDLER}", "cannot connect"),
    Case(f"consume {RABBIT}:{{closed}}/%2F?timeout=1 {HANDLER}", "Connection refused"),
    Case("events ls --url postgresql://127.0.0.1:{closed}/t", "cannot connect"),
    # ------------------------------------------------------------ a database that is not there
    Case(
        "tail postgresql://postgres@127.0.0.1:5432/rowcast_no_such_db",
        "check the database name in the URL",
        "postgresql",
    ),
    Case(
        "tail mysql://root@127.0.0.1:3306/rowcast_no_such_db",
        "database rowcast_no_such_db does not exist",
        "mysql",
    ),
    Case(
        "relay mysql://root@127.0.0.1:3306/rowcast_no_such_db --to - --checkpoint c.pos",
        "fix the database in the URL",
        "mysql",
    ),
    Case(
        "relay sqlite:///app.db --to - --checkpoint "
        "postgresql://postgres@127.0.0.1:5432/rowcast_no_such_db",
        'database "rowcast_no_such_db" does not exist',
        "postgresql",
    ),
    Case(
        "events ls --url postgresql://postgres@127.0.0.1:5432/rowcast_no_such_db",
        'database "rowcast_no_such_db" does not exist',
        "postgresql",
    ),
    Case(
        "relay sqlite:///app.db --checkpoint c.pos"
        " --to mysql://root@127.0.0.1:3306/rowcast_no_such_db?mode=replicate",
        "rowcast_no_such_db",
        "mysql",
    ),
    Case(
        f"consume redis://127.0.0.1:6379/15?stream=rowcast-no-such-stream {HANDLER}",
        "no stream 'rowcast-no-such-stream'",
        "redis",
    ),
    Case(
        f"consume nats://127.0.0.1:4222?stream=rowcast_no_such_stream {HANDLER}",
        "JetStream has no stream 'rowcast_no_such_stream'",
        "nats",
    ),
    Case(
        f"consume {RABBIT}:5672/%2F?queue=rowcast.no_such_queue {HANDLER}",
        "has no queue 'rowcast.no_such_queue'",
        "rabbitmq",
    ),
    # ------------------------------------------------------------ configuration files
    Case("config check {missing}/rowcast.toml", "cannot be read: No such file or directory"),
    Case("config check adir", "cannot be read: Is a directory"),
    Case("config check bad.toml", "bad.toml: not valid TOML"),
    Case("config check key.toml", "sorce: unknown key; did you mean 'source'?", lines=5),
    Case("relay --config key.toml", "sorce: unknown key; did you mean 'source'?"),
    Case("relay --config typo.toml", "unknown option 'tabels' (in tabels=x); did you mean"),
    Case("consume --config bad.toml", "bad.toml: not valid TOML"),
    # ------------------------------------------------------------ the console, status, dlq
    Case("ui --store foo://x", "no event store for 'foo://x'"),
    Case("ui --store sqlite:///{missing}/ev.db", "rowcast events init"),
    Case("ui --store sqlite:///app.db", "its database has no rowcast_events table"),
    Case("ui --store sqlite:///ev.db?synchronus=x", "did you mean 'synchronous'?"),
    Case("ui --host 0.0.0.0", "give a token with --token"),
    Case("status foo://x", "no checkpoint backend for 'foo://x'"),
    Case("status redis://127.0.0.1:{closed}/0", "Connection refused"),
    Case("status sqlite:///c.db?nme=x", "unknown option 'nme' (in nme=x); did you mean 'name'?"),
    Case("dlq ls foo://x", "no dead-letter place for 'foo://x'"),
    Case("dlq ls sqlite:///{missing}/dead.db", "rowcast events init"),
    Case("dlq ls redis://127.0.0.1:{closed}/0?strem=x", "did you mean 'stream'?"),
    # ------------------------------------------------------------ bad options
    Case("relay sqlite:///app.db --to -", "Missing option '--checkpoint'"),
    Case("relay sqlite:///app.db --checkpoint c.pos", "Missing option '--to'"),
    Case(f"{RELAY} --on-error dead-letter", "needs a dead-letter destination"),
    Case(f"{RELAY} --on-error stop --on-error stop", "--on-error is given 2 times for 1"),
    Case(f"{RELAY} --on-error maybe", "'maybe' is not one of"),
    Case(
        "relay outbox+sqlite:///app.db --to - --checkpoint c.pos --snapshot initial",
        "the outbox source has no snapshot",
    ),
    Case(f"{RELAY} --snapshot-chunk 0", "--snapshot-chunk"),
    Case(f"{RELAY} --server-id 5", "server_id is for mysql:// sources"),
    Case(f"{RELAY} --batch-size 0", "--batch-size"),
    Case(f"{RELAY} --metrics-port 70000", "--metrics-port"),
    Case("tail sqlite:///app.db --format xml", "'xml' is not one of"),
    Case("events read", "Missing argument 'STREAM'"),
    Case("events read s --url sqlite:///app.db --limit -1", "--limit"),
    Case("consume redis://127.0.0.1:{closed}/0", "Missing option '--handler'"),
    Case(f"consume redis://127.0.0.1:{{closed}}/0 {HANDLER} --workers 0", "--workers"),
    Case("consume redis://127.0.0.1:{closed}/0 --handler nocolon", "a handler is 'module:func"),
    Case("consume redis://127.0.0.1:{closed}/0 --handler no_such_mod:f", "cannot import the"),
    Case("demo --format xml", "'xml' is not one of"),
    Case("doctor", "Missing argument 'URL'"),
    Case("nosuchcommand", "No such command 'nosuchcommand'"),
]

_NEEDS = {
    "postgresql": lambda: require_server("postgresql"),
    "mysql": lambda: require_server("mysql"),
    "redis": require_redis,
    "nats": require_nats,
    "rabbitmq": require_rabbitmq,
}


@pytest.fixture
def place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory: app.db (an app's database), adir/, afile, and three
    bad configuration files."""
    with sqlite3.connect(tmp_path / "app.db") as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total TEXT)")
    conn.close()
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("not a directory\n")
    (tmp_path / "bad.toml").write_text("not = toml = here\n")
    (tmp_path / "key.toml").write_text('[relay]\nsorce = "sqlite:///app.db"\n')
    (tmp_path / "typo.toml").write_text(
        '[relay]\nsource = "sqlite:///app.db?tabels=x"\nto = ["-"]\ncheckpoint = "c.pos"\n'
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _listing(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}


@pytest.mark.parametrize("case", CASES, ids=[case.args for case in CASES])
def test_bad_input_is_one_short_message_with_the_fix_and_a_non_zero_status(
    place: Path, case: Case
) -> None:
    if case.needs:
        _NEEDS[case.needs]()
    missing = place / "fresh" / "not-there"
    args = shlex.split(case.args.format(closed=CLOSED, missing=missing))
    before = _listing(place)
    with deadline(20):
        result = CliRunner().invoke(main, args)
    output = result.output
    assert result.exit_code == case.status, output
    assert result.exception is None or isinstance(result.exception, SystemExit), output
    assert "Traceback" not in output
    assert "sqlalche.me" not in output  # SQLAlchemy's "background on this error" link
    assert case.message.format(missing=missing) in output
    # one paragraph (`config check` lists every mistake of a file, one a line)
    assert len([line for line in output.splitlines() if line.strip()]) <= case.lines, output
    assert not missing.parent.exists(), "a missing directory was created"
    created = _listing(place) - before
    assert created <= {"c.pos", "c.db"}, f"bad input left {created}"


def test_a_bug_is_one_paragraph_asking_for_a_report_and_exit_70() -> None:
    command = (
        "import click, sys; from rowcast.cli import main\n"
        "@main.command()\n"
        "def boom():\n"
        "    raise KeyError('no such thing')\n"
        "main()"
    )
    env = {k: v for k, v in os.environ.items() if k != "ROWCAST_DEBUG"}
    ran = subprocess.run(
        [sys.executable, "-c", command, "boom"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert ran.returncode == 70, ran.stderr
    assert "Traceback" not in ran.stderr
    assert ran.stderr.startswith("error: rowcast boom failed unexpectedly: builtins.KeyError")
    assert "run the command again with ROWCAST_DEBUG=1 for the traceback, and report it" in (
        " ".join(ran.stderr.split())
    )
    debug = subprocess.run(
        [sys.executable, "-c", command, "boom"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "ROWCAST_DEBUG": "1"},
        check=False,
    )
    assert debug.returncode == 70
    assert "Traceback (most recent call last)" in debug.stderr
    assert "KeyError: 'no such thing'" in debug.stderr


def test_usage_errors_keep_status_2_and_ctrl_c_keeps_clicks_abort() -> None:
    import click

    from rowcast.cli.group import main as group

    @click.command()
    def interrupted() -> None:
        raise KeyboardInterrupt

    @click.command()
    @click.argument("n", type=int)
    def needs_int(n: int) -> None:
        raise AssertionError("never called")

    group.add_command(interrupted)
    group.add_command(needs_int)
    try:
        result = CliRunner().invoke(group, ["interrupted"])
        assert result.exit_code == 1
        assert "Aborted!" in result.output
        assert "ROWCAST_DEBUG" not in result.output
        result = CliRunner().invoke(group, ["needs-int", "x"])
        assert result.exit_code == 2
        assert "'x' is not a valid integer" in result.output
    finally:
        group.commands.pop("interrupted")
        group.commands.pop("needs-int")


def test_an_unexpected_error_inside_a_nested_command_names_it() -> None:
    import click

    from rowcast.cli.group import main as group

    @click.group()
    def outer() -> None:
        pass

    @outer.command()
    def inner() -> None:
        raise RuntimeError("a bug\nover two lines")

    group.add_command(outer)
    try:
        result = CliRunner().invoke(group, ["outer", "inner"])
    finally:
        group.commands.pop("outer")
    assert result.exit_code == 70
    assert "rowcast outer inner failed unexpectedly: builtins.RuntimeError: a bug over two" in (
        result.output
    )


def test_sqlalchemys_background_link_never_reaches_the_user(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from rowcast.cli.console import print_error

    print_error(
        "checkpoint 'default' at sqlite:///x: load failed: (sqlite3.OperationalError) "
        "disk I/O error\n(Background on this error at: https://sqlalche.me/e/21/e3q8)"
    )
    err = capsys.readouterr().err
    assert err == (
        "error: checkpoint 'default' at sqlite:///x: load failed: (sqlite3.OperationalError) "
        "disk I/O error\n"
    )


def test_relay_help_and_the_readme_list_every_source_with_an_example() -> None:
    text = " ".join(CliRunner().invoke(main, ["relay", "--help"]).output.split())
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    for example in (
        "rowcast relay mysql://root@127.0.0.1:3306/shop --to - --checkpoint relay.pos",
        "rowcast relay 'postgresql://app@127.0.0.1/shop?slot=shop&publication=shop'",
        "rowcast relay sqlite:///app.db --to sqlite:///events.db --checkpoint relay.pos",
        "rowcast relay outbox+postgresql://app@127.0.0.1/shop --to nats://127.0.0.1:4222",
    ):
        assert example in text
        assert example in readme
    for kind in ("binlog", "logical replication", "triggers", "outbox"):
        assert kind in text
    assert "70 an unexpected error" in text
    assert "| 70 |" in readme


@pytest.mark.parametrize(
    ("url", "needs"),
    [
        ("mysql://root@127.0.0.1:{closed}/test", ""),
        ("postgresql://postgres@127.0.0.1:{closed}/test", ""),
        ("postgresql://postgres@127.0.0.1:5432/rc_no_such_database_x", "postgresql"),
        ("mysql://root@127.0.0.1:3306/rc_no_such_database_x", "mysql"),
    ],
)
def test_tail_says_it_is_tailing_only_once_the_source_is_open(url: str, needs: str) -> None:
    """Was: 'tailing ... from now (Ctrl-C to stop)', then the connection error."""
    if needs:
        _NEEDS[needs]()
    with deadline(20):
        result = CliRunner().invoke(main, ["tail", url.format(closed=CLOSED)])
    assert result.exit_code == 2, result.output
    assert "error: " in result.output
    assert "tailing" not in result.output
