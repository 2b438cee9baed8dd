"""The C half of `rowcast._speedups` (`rowcast._cspeedups`): built by the wheel's hook,
safe on any input, and optional.

What it makes is checked against the plain path in tests/test_speedups.py; here: that
CI runs it, that bad input is an exception and never a crash or a leak, that rowcast
runs on its Python paths where it was not built (or built for another version), and
that a machine without a C compiler still gets a wheel.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from rowcast import Change, _speedups
from rowcast.change import Action
from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[1]

try:
    from rowcast import _cspeedups
except ImportError:  # not built here: what needs it skips (CI requires it: below)
    _cspeedups = None  # type: ignore[assignment]

needs_c = pytest.mark.skipif(_cspeedups is None, reason="rowcast._cspeedups is not built here")


class Name(str):
    """A name whose hash is Python code (a dict's insert would run it)."""

    __slots__ = ()

    def __hash__(self) -> int:
        return 1


def _template() -> Change:
    return Change(Action.WRITE, "main", "t", 0, after={}, ts=1.5, txid="x", source="sqlite")


def _changes(rows: Any, names: Any = ("id", "v"), key: Any = 0, skip: Any = None) -> Any:
    return _cspeedups.changes(_template(), rows, names, key, Change.pk, Change.after, skip)


def test_ci_runs_the_c_speedups() -> None:
    if _cspeedups is None and not IN_CI:
        pytest.skip("rowcast._cspeedups is not built here (no C compiler at install)")
    assert _cspeedups is not None, "the build hook did not build rowcast._cspeedups"
    assert _cspeedups.VERSION == _speedups._C_VERSION
    assert _speedups.compiled is (not _speedups.PURE)


@needs_c
@pytest.mark.parametrize(
    ("rows", "names", "key", "skip", "error"),
    [
        ([[1, "a"]], ("id", "v"), 0, None, TypeError),  # a row that is not a tuple
        ([(1,)], ("id", "v"), 0, None, ValueError),  # fewer values than names
        ([(1, "a")], ("id", "v"), 2, None, IndexError),  # the key past the row
        ([(1, "a")], ("id", "v"), (0, 5), None, IndexError),
        ([(1, "a")], ("id", "v"), -1, None, IndexError),
        ([(1, "a")], ("id", "v"), 2**70, None, IndexError),
        ([(1, "a")], ("id", "v"), "0", None, TypeError),
        ([(1, "a")], ("id", "v"), (0, "1"), None, TypeError),
        ([(1, "a")], ("id", 2), 0, None, TypeError),  # a name that is not a str
        ([(1, "a")], ("id", Name("v")), 0, None, TypeError),  # nor exactly one
        ([(1, "a")], ("id", "v"), 0, [1], TypeError),  # skip is not a set
        ([([], "a")], ("id", "v"), 0, {1}, TypeError),  # an unhashable key
        ((1, "a"), ("id", "v"), 0, None, TypeError),  # rows not a list
    ],
)
def test_bad_input_is_an_exception_not_a_crash(
    rows: Any, names: Any, key: Any, skip: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        _changes(rows, names, key, skip)


@needs_c
def test_only_a_slotted_template_and_its_own_slots_are_taken() -> None:
    class Loose:
        pass

    class Other:
        __slots__ = ("after", "pk")

    class Mapping(dict[str, Any]):  # slots, but a dict underneath: unset up by a copy
        __slots__ = ("after", "pk")

    rows = [(1, "a")]
    for template, pk, after in [
        (Loose(), Change.pk, Change.after),
        (Mapping(), Mapping.pk, Mapping.after),
    ]:
        with pytest.raises(TypeError, match="slots only"):
            _cspeedups.changes(template, rows, ("id", "v"), 0, pk, after, None)
    with pytest.raises(TypeError, match="member descriptor"):
        _cspeedups.changes(_template(), rows, ("id", "v"), 0, "pk", Change.after, None)
    with pytest.raises(TypeError, match="template's class"):
        _cspeedups.changes(_template(), rows, ("id", "v"), 0, Other.pk, Change.after, None)
    with pytest.raises(ValueError, match="two slots"):  # one slot set twice would leak
        _cspeedups.changes(_template(), rows, ("id", "v"), 0, Change.pk, Change.pk, None)


@needs_c
def test_nothing_leaks_whatever_the_outcome() -> None:
    value, name, schema = object(), "v" + str(os.getpid()), "s" + str(os.getpid())
    template = Change(Action.WRITE, schema, "t", 0, after={}, ts=1.5)
    before = [sys.getrefcount(x) for x in (value, name, schema, template)]
    rows = [(i, value) for i in range(100)]
    for skip in (None, {3, 5}, set(range(100))):
        made = _cspeedups.changes(template, rows, ("id", name), 0, Change.pk, Change.after, skip)
        del made
        composite = _cspeedups.changes(
            template, rows, ("id", name), (1, 0), Change.pk, Change.after, skip
        )
        del composite
    for bad in ([*rows, (1,)], [*rows, [1, value]]):  # fails at its last row
        with pytest.raises((TypeError, ValueError)):
            _cspeedups.changes(template, bad, ("id", name), 0, Change.pk, Change.after, None)
    del rows, bad
    gc.collect()
    assert [sys.getrefcount(x) for x in (value, name, schema, template)] == before


@needs_c
def test_a_key_that_empties_the_rows_while_compared_is_no_crash() -> None:
    rows: list[tuple[Any, ...]] = []

    class Evil:
        def __hash__(self) -> int:
            rows.clear()  # the list shrinks under the loop
            gc.collect()
            return 1

        def __eq__(self, other: object) -> bool:
            return True

    rows.extend((Evil(), "a") for _ in range(5))
    made = _changes(rows, skip={"x"})
    assert len(made) == 1  # the row being made was kept alive; the rest are gone


@needs_c
def test_a_key_that_changes_the_templates_class_while_compared_is_no_crash() -> None:
    # the template's class made a garbage collected orphan under the loop (a review
    # crashed the interpreter so: the class was not held)
    class Base:
        __slots__ = ("after", "pk")

    def orphan() -> Any:
        class Sub(Base):
            __slots__ = ()

        return Sub()

    template = orphan()
    template.after = template.pk = None

    class Evil:
        def __hash__(self) -> int:
            template.__class__ = Base
            gc.collect()
            return 1

        def __eq__(self, other: object) -> bool:
            return False

    rows = [(Evil(), "a"), (2, "b")]
    with pytest.raises(RuntimeError, match="class changed meanwhile"):
        _cspeedups.changes(template, rows, ("id", "v"), 0, Base.pk, Base.after, {1})


_CHILD = """
import sys, types, warnings
{setup}
warnings.simplefilter("default")
from rowcast import _speedups, Change
from rowcast.change import Action
made = _speedups.snapshot_rows(Change, Action.WRITE, [(1, "a")], ("id", "v"), 0, None,
                               "main", "t", 1.0, None, None, "sqlite")
print(_speedups.compiled, made[0].after)
"""


@pytest.mark.parametrize(
    ("setup", "expected", "said"),
    [
        ("sys.modules['rowcast._cspeedups'] = None", "False {'id': 1, 'v': 'a'}", ""),
        (
            "sys.modules['rowcast._cspeedups'] = types.SimpleNamespace(VERSION=0, __file__='a')",
            "False {'id': 1, 'v': 'a'}",
            "was built for another version of rowcast and is not used: reinstall rowcast",
        ),
    ],
)
def test_without_a_build_of_this_version_rowcast_runs_on_its_python_paths(
    setup: str, expected: str, said: str
) -> None:
    code = _CHILD.format(setup=setup)
    env = {k: v for k, v in os.environ.items() if k != "ROWCAST_PURE"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == expected
    assert said in out.stderr


def _wheel(tmp_path: Path, **env: str) -> tuple[Path, str]:
    """A wheel of rowcast built as pip builds one (isolated, the hook's setuptools fetched)."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (wheel,) = tmp_path.glob("rowcast-*.whl")
    return wheel, out.stdout + out.stderr


def test_a_wheel_holds_the_c_speedups_built_for_its_platform(tmp_path: Path) -> None:
    if _cspeedups is None and not IN_CI:
        pytest.skip("no C compiler here")
    wheel, _ = _wheel(tmp_path)
    assert not wheel.name.endswith("-py3-none-any.whl")  # tagged for this interpreter
    names = zipfile.ZipFile(wheel).namelist()
    built = [n for n in names if n.endswith((".so", ".pyd"))]
    assert len(built) == 1, built  # the hook's own build, never one left in place too
    assert built[0].startswith("rowcast/_cspeedups.")
    assert not [n for n in names if n.endswith(".c")]


def test_a_machine_without_a_c_compiler_gets_a_pure_wheel_and_is_told(tmp_path: Path) -> None:
    wheel, said = _wheel(tmp_path, CC="false")
    assert wheel.name.endswith("-py3-none-any.whl")
    assert not [n for n in zipfile.ZipFile(wheel).namelist() if n.endswith((".so", ".pyd"))]
    assert "the C speedups were not built" in said
    assert "runs on its Python paths" in said


# -------------------------------------------------------------- the build hook

hook = pytest.importorskip("hatch_build")


def test_an_editable_build_replaces_the_old_one_by_a_new_file(tmp_path: Path) -> None:
    # a relay that has the old one loaded keeps it whole: rewritten in place, it crashed
    package, built = tmp_path / "rowcast", tmp_path / "build" / "_cspeedups.cpython-311-x.so"
    package.mkdir()
    built.parent.mkdir()
    old = package / built.name
    old.write_bytes(b"old")
    built.write_bytes(b"new")
    with old.open("rb") as loaded:
        placed = hook.put_in_place(built, package)
        assert loaded.read() == b"old"
    assert placed == old
    assert old.read_bytes() == b"new"
    assert sorted(p.name for p in package.iterdir()) == [built.name]  # nothing partial left


def test_an_editable_build_removes_what_an_earlier_one_left(tmp_path: Path) -> None:
    # a build of an earlier source stayed in use when the next one failed or was left out
    names = ["_cspeedups.c", "_cspeedups.pyi", "_cspeedups.cpython-311-x.so", "_cspeedups.pyd"]
    for name in [*names, "_other.cpython-311-x.so"]:
        (tmp_path / name).write_text("")
    hook.remove_in_place(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "_cspeedups.c",
        "_cspeedups.pyi",
        "_other.cpython-311-x.so",
    ]


@pytest.mark.parametrize(("value", "left_out"), [("", False), ("0", False), ("1", True)])
def test_rowcast_no_c_leaves_the_extension_out(
    monkeypatch: pytest.MonkeyPatch, value: str, left_out: bool
) -> None:
    monkeypatch.setenv("ROWCAST_NO_C", value)
    assert bool(hook._left_out()) is left_out
