"""`CheckpointContract`: what every `rowcast.checkpoint.Checkpoint` backend must do.

Subclass it in a test module and override `make_checkpoint` (and
`remove_checkpoint` when what a test saves outlives the test, e.g. rows in a
shared database)::

    class TestFileCheckpoint(CheckpointContract):
        @pytest.fixture(autouse=True)
        def _dir(self, tmp_path):
            self.dir = tmp_path

        def make_checkpoint(self, name):
            return open_checkpoint(str(self.dir / "pos.json"), name)

Tests use `checkpoint`, which opens one with a fresh unique name (or the name
given), closes everything at teardown and then removes every name it handed out.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from rowcast.checkpoint import Checkpoint
from rowcast.checkpoint.report import Reporting, read_reports
from rowcast.errors import ConfigError, StoreError

__all__ = ["CheckpointContract"]


class CheckpointContract:
    """The behaviour every checkpoint backend shares; see `rowcast.checkpoint`."""

    def make_checkpoint(self, name: str) -> Checkpoint:
        """Open a checkpoint of the backend under test; a second call sees the same data."""
        raise NotImplementedError

    def remove_checkpoint(self, name: str) -> None:
        """Delete what was saved under `name` (its report too); called at teardown for
        every name used."""

    def store_url(self) -> str:
        """The URL of the store `make_checkpoint` opens, without a name: where
        `rowcast.checkpoint.report.read_reports` finds the reports of every name."""
        raise NotImplementedError

    @pytest.fixture(autouse=True)
    def _checkpoints(self) -> Iterator[None]:
        self._opened: list[Checkpoint] = []
        self._names: list[str] = []
        yield
        for checkpoint in self._opened:
            checkpoint.close()
        for name in self._names:
            self.remove_checkpoint(name)

    def fresh_name(self) -> str:
        """A name no other test run uses; removed at teardown."""
        name = f"test-{uuid.uuid4().hex}"
        self._names.append(name)
        return name

    def checkpoint(self, name: str | None = None) -> Checkpoint:
        """A new instance of the checkpoint `name` (a fresh name when None), closed at teardown."""
        opened = self.make_checkpoint(self.fresh_name() if name is None else name)
        self._opened.append(opened)
        return opened

    def test_is_a_checkpoint(self) -> None:
        cp = self.checkpoint()
        assert isinstance(cp, Checkpoint)
        assert isinstance(cp.url, str)
        assert cp.url

    def test_load_before_save_is_none(self) -> None:
        assert self.checkpoint().load() is None

    def test_round_trip(self) -> None:
        cp = self.checkpoint()
        cp.save("mysql-bin.000003:1234")
        assert cp.load() == "mysql-bin.000003:1234"

    def test_overwrite_keeps_the_last(self) -> None:
        cp = self.checkpoint()
        for position in ("0/16B3748", "0/16B3790", "0/1700000"):
            cp.save(position)
        assert cp.load() == "0/1700000"

    def test_names_are_independent(self) -> None:
        first, second, untouched = self.fresh_name(), self.fresh_name(), self.fresh_name()
        a, b = self.checkpoint(first), self.checkpoint(second)
        a.save("a-1")
        b.save("b-1")
        a.save("a-2")
        assert (a.load(), b.load()) == ("a-2", "b-1")
        assert self.checkpoint(untouched).load() is None

    def test_a_new_instance_sees_what_another_saved(self) -> None:
        name = self.fresh_name()
        before = self.checkpoint(name)
        before.save("3E11FA47-71CA-11E1-9E33-C80AA9429562:1-23")
        before.close()  # the consumer stops...
        after = self.checkpoint(name)  # ...and starts again
        assert after.load() == "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-23"
        after.save("3E11FA47-71CA-11E1-9E33-C80AA9429562:1-24")
        assert self.checkpoint(name).load() == "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-24"

    def test_concurrent_first_saves_of_one_name_all_succeed(self) -> None:
        """Several instances creating the same name at once: an upsert race, not an error."""
        name = self.fresh_name()
        instances = [self.checkpoint(name) for _ in range(4)]
        barrier = threading.Barrier(len(instances))
        errors: list[BaseException] = []

        def save(cp: Checkpoint, position: str) -> None:
            barrier.wait()
            try:
                cp.save(position)
            except BaseException as e:  # reported below, in the test's own thread
                errors.append(e)

        threads = [
            threading.Thread(target=save, args=(cp, f"p{i}")) for i, cp in enumerate(instances)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert self.checkpoint(name).load() in {"p0", "p1", "p2", "p3"}

    @pytest.mark.parametrize(
        "position",
        [
            "pos: é ü ß 中文 🚀 \t ' \" \\ ; -- %s ${x}",
            " leading and trailing spaces \n",
            ",".join(f"{uuid.UUID(int=i)}:1-{i * 1000}" for i in range(2000)),  # a long GTID set
            "🚀" * 20_000,  # 80,000 bytes of UTF-8
        ],
        ids=["unicode", "whitespace", "long-gtid-set", "long-4-byte-utf8"],
    )
    def test_positions_come_back_exactly(self, position: str) -> None:
        name = self.fresh_name()
        self.checkpoint(name).save(position)
        assert self.checkpoint(name).load() == position

    @pytest.mark.parametrize("position", [None, 42, b"mysql-bin.000003:4", ["a"]])
    def test_save_of_a_non_str_is_a_type_error(self, position: Any) -> None:
        cp = self.checkpoint()
        cp.save("kept")
        with pytest.raises(TypeError, match="position is a str"):
            cp.save(position)
        assert cp.load() == "kept"

    @pytest.mark.parametrize("position", ["", "a\x00b"])
    def test_save_of_an_empty_position_is_a_config_error(self, position: str) -> None:
        cp = self.checkpoint()
        cp.save("kept")
        with pytest.raises(ConfigError, match="non-empty string"):
            cp.save(position)
        assert cp.load() == "kept"

    def test_close_is_idempotent_and_final(self) -> None:
        cp = self.checkpoint()
        cp.save("p")
        cp.close()
        cp.close()
        with pytest.raises(StoreError, match="closed"):
            cp.load()
        with pytest.raises(StoreError, match="closed"):
            cp.save("q")

    # ------------------------------------------------------------------ reports

    def reports(self, *names: str) -> dict[str, dict[str, Any]]:
        """The reports of `names` found at `store_url` (other tests' are left out)."""
        found = read_reports(self.store_url())
        return {r["name"]: r for r in found if r.get("name") in names}

    def test_a_report_round_trips(self) -> None:
        name = self.fresh_name()
        cp = self.checkpoint(name)
        assert isinstance(cp, Reporting)
        report = {
            "format": 1,
            "kind": "relay",
            "state": "running",
            "position": "0/16B3748",
            "sinks": ["redis://h:6379/0", "-"],
            "lag_seconds": 0.25,
            "last_error": "é 中文 🚀 \" ' \\",
            "log": {"retained_bytes": 1234, "warnings": []},
            "stalled": False,
            "head": None,
        }
        cp.save_report(report)
        assert self.reports(name) == {name: {**report, "name": name}}

    def test_the_last_report_wins_and_one_per_name(self) -> None:
        first, second = self.fresh_name(), self.fresh_name()
        a, b = self.checkpoint(first), self.checkpoint(second)
        assert isinstance(a, Reporting)
        assert isinstance(b, Reporting)
        a.save_report({"state": "starting"})
        b.save_report({"state": "running"})
        a.save_report({"state": "stopped"})
        found = self.reports(first, second)
        assert {name: r["state"] for name, r in found.items()} == {
            first: "stopped",
            second: "running",
        }
        assert [r["state"] for r in read_reports(self.store_url(), first)] == ["stopped"]

    def test_a_report_and_the_position_leave_each_other_alone(self) -> None:
        name = self.fresh_name()
        cp = self.checkpoint(name)
        assert isinstance(cp, Reporting)
        cp.save("p1")
        cp.save_report({"state": "running", "position": "other"})
        cp.save("p2")
        assert cp.load() == "p2"
        assert self.reports(name)[name]["position"] == "other"
        assert self.checkpoint(name).load() == "p2"

    def test_no_report_before_one_is_saved(self) -> None:
        name = self.fresh_name()
        self.checkpoint(name).save("p")
        assert self.reports(name) == {}
        assert read_reports(self.store_url(), name) == []

    def test_a_closed_checkpoint_saves_no_report(self) -> None:
        cp = self.checkpoint()
        assert isinstance(cp, Reporting)
        cp.close()
        with pytest.raises(StoreError, match="closed"):
            cp.save_report({"state": "running"})
