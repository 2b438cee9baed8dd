"""The URLs the commands take: ``${VARIABLE}`` expansion, password files, masking."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from click.testing import CliRunner

from rowcast._url import masked
from rowcast.cli import main
from rowcast.cli.urls import expand, password_file, resolve_url
from rowcast.errors import ConfigError

PASSWORD = "p@ss/w:rd %#?&+"


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "db.password"
    path.write_text(PASSWORD + "\n")
    path.chmod(0o600)
    return path


def test_a_variable_is_expanded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RC_HOST", "db.internal")
    assert expand("mysql://app@${RC_HOST}:3306/shop") == "mysql://app@db.internal:3306/shop"
    assert expand("no variable, $HOME and $ {x} kept") == "no variable, $HOME and $ {x} kept"


def test_a_doubled_dollar_is_a_literal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RC_X", "x")
    assert expand("$${RC_X} is ${RC_X}") == "${RC_X} is x"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${RC_NOT_SET_ANYWHERE}", "environment variable RC_NOT_SET_ANYWHERE is not set"),
        ("${1X}", "is not an environment variable name"),
        ("${RC_X", "is never closed"),
    ],
)
def test_a_bad_reference_is_an_error_naming_it(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        expand(text, "relay.toml:3: to")
    assert str(error.value).startswith("relay.toml:3: to: ")
    assert message in str(error.value)


def test_a_variable_in_the_user_info_or_a_query_value_is_percent_encoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RC_PASSWORD", PASSWORD)
    monkeypatch.setenv("RC_PATH", "/var/lib/rowcast")
    url = resolve_url("postgresql://app:${RC_PASSWORD}@db/shop?password=${RC_PASSWORD}&x=1")
    parts = urlsplit(url)
    assert unquote(parts.password or "") == PASSWORD
    assert parts.hostname == "db"
    assert parts.query.endswith("&x=1")
    assert unquote(parts.query.split("&")[0].partition("=")[2]) == PASSWORD
    # elsewhere, as it is: a path, or a whole URL
    assert resolve_url("sqlite:///${RC_PATH}/events.db") == "sqlite:////var/lib/rowcast/events.db"
    monkeypatch.setenv("RC_URL", "redis://:pw@cache:6379/0")
    assert resolve_url("${RC_URL}") == "redis://:pw@cache:6379/0"


def test_a_password_file_is_read_into_the_url_and_the_option_removed(secret: Path) -> None:
    url = resolve_url(f"mysql://app@db:3306/shop?server_id=7&password_file={secret}&x=y")
    parts = urlsplit(url)
    assert unquote(parts.password or "") == PASSWORD
    assert (parts.username, parts.hostname, parts.port) == ("app", "db", 3306)
    assert parts.query == "server_id=7&x=y"
    assert "password_file" not in url
    no_user = urlsplit(resolve_url(f"redis://cache:6379/0?password_file={secret}"))
    assert (no_user.username, unquote(no_user.password or "")) == ("", PASSWORD)


def test_a_url_without_secrets_comes_back_unchanged() -> None:
    for url in ("mysql://root@127.0.0.1:xx/test", "relay.pos", "-", "sqlite:///a.db?x=%41"):
        assert resolve_url(url) == url


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_password_file_others_may_read_is_refused_with_the_chmod(secret: Path, mode: int) -> None:
    secret.chmod(mode)
    with pytest.raises(ConfigError) as error:
        password_file(str(secret), "--to")
    assert f"run chmod 600 {secret}" in str(error.value)
    assert PASSWORD not in str(error.value)


def test_a_password_file_is_read_once(secret: Path) -> None:
    secret.chmod(0o400)
    assert password_file(str(secret)) == PASSWORD
    secret.chmod(0o600)
    secret.write_text("changed\n")
    assert password_file(str(secret)) == PASSWORD  # the first reading holds


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "on one line"), ("a\nb\n", "on one line"), (None, "No such file")],
)
def test_a_bad_password_file_is_an_error(tmp_path: Path, text: str | None, message: str) -> None:
    path = tmp_path / "bad.password"
    if text is not None:
        path.write_text(text)
        path.chmod(0o600)
    with pytest.raises(ConfigError, match=message):
        resolve_url(f"mysql://app@db/shop?password_file={path}")


def test_a_password_given_twice_is_an_error(secret: Path) -> None:
    with pytest.raises(ConfigError, match="has a password already") as error:
        resolve_url(f"mysql://app:other@db/shop?password_file={secret}")
    assert "other" not in str(error.value)


def test_a_malformed_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="malformed URL 'postgresql://u:\\*\\*\\*@"):
        resolve_url("postgresql://u:secret@[::1/db")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://app@db/shop?password=hunter2&x=1",
            "postgresql://app@db/shop?password=***&x=1",
        ),
        ("nats://s3cr3t-token@broker:4222", "nats://***@broker:4222"),
        ("nats://user:pw@broker:4222", "nats://user:***@broker:4222"),
        ("postgresql://u:hunter2@[::1/db", "postgresql://u:***@[::1/db"),
    ],
)
def test_masked_hides_every_password_of_a_url(url: str, shown: str) -> None:
    assert masked(url) == shown


def test_the_commands_resolve_their_urls(secret: Path, tmp_path: Path) -> None:
    missing = CliRunner().invoke(main, ["doctor", "mysql://app:${RC_UNSET_PW}@127.0.0.1/x"])
    assert missing.exit_code == 2
    assert "error: URL: environment variable RC_UNSET_PW is not set" in missing.output
    secret.chmod(0o644)
    exposed = CliRunner().invoke(
        main, ["relay", "-", "--to", f"redis://127.0.0.1/0?password_file={secret}"]
    )
    assert exposed.exit_code == 2
    assert f"--to: password file {str(secret)!r} may be read by others" in exposed.output
    assert "Traceback" not in exposed.output
    store = tmp_path / "store.db"
    made = CliRunner().invoke(
        main,
        ["events", "init", "sqlite:///${RC_STORE_DIR}/store.db"],
        env={"RC_STORE_DIR": str(tmp_path)},
    )
    assert made.exit_code == 0, made.output
    assert store.exists()
