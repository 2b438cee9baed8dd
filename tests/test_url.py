"""The URL helpers every backend family shares: masking, and reading query options."""

from __future__ import annotations

from pathlib import Path

import pytest

from rowcast._url import boolean, existing_directory, query, unknown_option
from rowcast.errors import ConfigError
from rowcast.sinks.rabbitmq import RabbitMQSink

URL = "amqp://user:secret@broker/%2F"
WORDS = [
    ("true", True),
    ("1", True),
    ("yes", True),
    ("on", True),
    ("TRUE", True),
    ("false", False),
    ("0", False),
    ("no", False),
    ("off", False),
    ("Off", False),
]


@pytest.mark.parametrize(("text", "expected"), WORDS)
def test_boolean_reads_the_words_in_the_url(text: str, expected: bool) -> None:
    assert boolean(URL, "mandatory", None, {"mandatory": text}, not expected) is expected


@pytest.mark.parametrize(("text", "expected"), WORDS)
def test_boolean_reads_the_words_given_as_a_keyword(text: str, expected: bool) -> None:
    # a keyword wins over the URL; text given there means what it means in the URL
    options = {"mandatory": str(not expected).lower()}
    assert boolean(URL, "mandatory", text, options, not expected) is expected


@pytest.mark.parametrize("given", [True, False])
def test_boolean_keeps_a_bool_keyword(given: bool) -> None:
    assert boolean(URL, "mandatory", given, {"mandatory": str(not given)}, not given) is given


@pytest.mark.parametrize("default", [True, False])
def test_boolean_default_when_not_given(default: bool) -> None:
    assert boolean(URL, "mandatory", None, {}, default) is default


@pytest.mark.parametrize(
    ("given", "options"),
    [(None, {"mandatory": "ture"}), ("flase", {}), (None, {"mandatory": ""}), (2, {})],
)
def test_boolean_refuses_anything_else_naming_option_and_value(
    given: object, options: dict[str, str]
) -> None:
    value = given if given is not None else options["mandatory"]
    with pytest.raises(ConfigError) as caught:
        boolean(URL, "mandatory", given, options, True)
    message = str(caught.value)
    assert "mandatory" in message
    assert repr(value) in message
    assert "secret" not in message  # the URL in the message is masked


def test_a_sink_reads_false_as_false() -> None:
    # pika is imported, nothing is connected: no server needed
    assert RabbitMQSink(f"{URL}?mandatory=off").mandatory is False
    assert RabbitMQSink(URL, mandatory="false").mandatory is False  # type: ignore[arg-type]
    assert RabbitMQSink(URL, mandatory="yes").mandatory is True  # type: ignore[arg-type]
    assert RabbitMQSink(f"{URL}?mandatory=false", mandatory=True).mandatory is True


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis://h/0?strem=orders",
            "unknown option 'strem' (in strem=orders); did you mean 'stream'? "
            "the Redis sink takes stream, prefix",
        ),
        ("redis://h/0?zzz=1", "unknown option 'zzz' (in zzz=1); the Redis sink takes stream"),
    ],
)
def test_an_unknown_option_names_the_option_its_value_and_the_closest_known(
    url: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        query(url, "the Redis sink", ("redis",), ("stream", "prefix", "maxlen"))
    assert expected in str(caught.value)


def test_unknown_option_masks_the_password() -> None:
    error = unknown_option(f"{URL}?x=1", "x", "1", "the RabbitMQ sink", ("exchange",))
    assert "secret" not in str(error)
    assert "unknown option 'x' (in x=1); the RabbitMQ sink takes exchange" in str(error)


def test_a_directory_it_may_not_look_into_is_a_config_error_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python 3.11's ``Path.is_dir`` raises PermissionError on a directory this user may
    not search (root is never refused, so the refusal is made here): a `ConfigError`
    naming it and the fix, not an unexpected error (was: exit 70, "a bug in rowcast")."""
    locked = tmp_path / "locked"

    def refused(self: Path) -> bool:
        raise PermissionError(13, "Permission denied", str(locked / "sub"))

    monkeypatch.setattr(Path, "is_dir", refused)
    with pytest.raises(ConfigError) as refusal:
        existing_directory("--checkpoint x", locked / "sub")
    said = str(refusal.value)
    assert f"cannot look into '{locked / 'sub'}' (permission denied)" in said
    assert "give a path in a directory this user can write" in said
