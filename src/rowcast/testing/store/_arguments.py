"""What every call refuses: bad streams, batches, versions and read arguments."""

from __future__ import annotations

from typing import Any

import pytest

from rowcast.errors import ConfigError
from rowcast.store import NewEvent

from ._base import StoreContractBase, events


class ArgumentTests(StoreContractBase):
    """Bad input is a TypeError or a ConfigError, and changes nothing."""

    def test_an_empty_batch_is_a_config_error(self) -> None:
        with pytest.raises(ConfigError, match="at least one event"):
            self.store.append(self.stream(), [])

    @pytest.mark.parametrize(
        "batch",
        [[{"type": "t"}], [NewEvent("t", 1), "t"], NewEvent("t", 1), "events", None],
        ids=["dict", "str-item", "bare-event", "str", "none"],
    )
    def test_a_batch_of_other_things_is_a_type_error(self, batch: Any) -> None:
        stream = self.stream()
        with pytest.raises(TypeError, match="NewEvent"):
            self.store.append(stream, batch)
        assert self.store.stream_version(stream) == 0

    @pytest.mark.parametrize("stream", [None, 1, b"s"])
    def test_a_stream_name_not_a_str_is_a_type_error(self, stream: Any) -> None:
        with pytest.raises(TypeError, match="stream name"):
            self.store.append(stream, events(1))
        with pytest.raises(TypeError, match="stream name"):
            self.store.read(stream)
        with pytest.raises(TypeError, match="stream name"):
            self.store.stream_version(stream)

    @pytest.mark.parametrize("stream", ["", "a\x00b"])
    def test_an_empty_stream_name_is_a_config_error(self, stream: str) -> None:
        with pytest.raises(ConfigError, match="non-empty"):
            self.store.append(stream, events(1))
        with pytest.raises(ConfigError, match="non-empty"):
            self.store.read(stream)

    @pytest.mark.parametrize("stream", ["@all", "@mine"])
    def test_names_starting_with_at_are_reserved_for_writes(self, stream: str) -> None:
        with pytest.raises(ConfigError, match="reserved"):
            self.store.append(stream, events(1))
        with pytest.raises(ConfigError, match="reserved"):
            self.store.delete_stream(stream)

    def test_only_at_all_reads(self) -> None:
        with pytest.raises(ConfigError, match="@all"):
            self.store.read("@mine")

    @pytest.mark.parametrize(
        ("expected", "error"),
        [(True, TypeError), ("any", TypeError), (None, TypeError), (-1, ConfigError)],
    )
    def test_a_bad_expected_version(self, expected: Any, error: type[Exception]) -> None:
        stream = self.stream()
        with pytest.raises(error, match="expected_version"):
            self.store.append(stream, events(1), expected_version=expected)
        assert self.store.stream_version(stream) == 0

    @pytest.mark.parametrize(
        ("kwargs", "error"),
        [
            ({"after": -1}, ConfigError),
            ({"after": "1"}, TypeError),
            ({"limit": -1}, ConfigError),
            ({"limit": 1.5}, TypeError),
        ],
    )
    def test_bad_read_arguments(self, kwargs: dict[str, Any], error: type[Exception]) -> None:
        with pytest.raises(error):
            self.store.read(self.stream(), **kwargs)
        with pytest.raises(error):
            self.store.read_all(**kwargs)

    @pytest.mark.parametrize(
        ("args", "error"),
        [
            ((1, None), TypeError),
            (("", None), ConfigError),
            (("t", None, ["not", "a", "mapping"]), TypeError),
            (("t", None, None, 42), TypeError),
            (("t", None, None, "not-a-uuid"), ConfigError),
        ],
    )
    def test_bad_new_events(self, args: tuple[Any, ...], error: type[Exception]) -> None:
        with pytest.raises(error):
            NewEvent(*args)
