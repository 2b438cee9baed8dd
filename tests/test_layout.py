"""The shape of the house: what sits at the package root, no import cycle, no source downstream.

Imports are read from the source with `ast`, so a module's dependencies are
checked whether or not its extra is installed.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
from collections.abc import Iterator
from pathlib import Path

import pytest

import rowcast

SRC = Path(rowcast.__file__).parent


def _modules() -> dict[str, Path]:
    """Every module under src/rowcast by dotted name (a package by its own name)."""
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()
#: the C extensions, by the modules their sources build (each imports nothing of rowcast)
EXTENSIONS = {
    ".".join(path.relative_to(SRC.parent).with_suffix("").parts) for path in SRC.rglob("*.c")
}


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _calls(node: ast.AST) -> Iterator[ast.Call]:
    """The calls under `node` made when the module is imported (not in functions)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(child, ast.Call):
            yield child
        yield from _calls(child)


def _imports(node: ast.AST, lazy: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements under `node`: those run when the module is imported, or
    (`lazy`) every one, also inside functions and under ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        elif not lazy and isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        elif not lazy and isinstance(child, ast.If) and _type_checking(child.test):
            for statement in child.orelse:
                yield from _imports(ast.Module(body=[statement], type_ignores=[]), lazy)
        else:
            yield from _imports(child, lazy)


def _targets(name: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The rowcast modules that `node`, in module `name`, imports.

    ``from package import name`` imports the submodule when there is one, else the
    package (``from .. import __version__``). The packages above a module that are
    not named (``rowcast.store`` for ``from .store.base import X``) are not counted:
    Python initialises them first in any case.
    """
    if isinstance(node, ast.Import):
        for alias in node.names:
            target = alias.name
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target:
                yield target
        return
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    if node.level:
        base = package
        for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
        base = f"{base}.{node.module}" if node.module else base
    else:
        base = node.module or ""
    if base not in MODULES:
        return
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        if submodule not in EXTENSIONS:
            yield submodule if submodule in MODULES else base


def _graph(lazy: bool) -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        graph[name] = {t for node in _imports(tree, lazy) for t in _targets(name, node)} - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


# Cycles through imports inside functions or under TYPE_CHECKING, known today.
KNOWN_LAZY_CYCLES: set[frozenset[str]] = set()

# Those that may open a source: the command, the relay, the conformance suites,
# and the public face, which re-exports `open_source`.
# rowcast.status asks each reporting relay's source for its head, by URL, as the CLI does
MAY_OPEN_SOURCES = (
    "rowcast.sources",
    "rowcast.cli",
    "rowcast.relay",
    "rowcast.status",
    "rowcast.testing",
)

ROOT = {
    "__init__.py",
    "__main__.py",
    "py.typed",
    "change.py",
    "codec.py",
    "hub.py",
    "errors.py",
    "backends.py",
    "_url.py",
    "_speedups.py",
    "_drafts.py",  # objects made as drafts of their class's layout, for _speedups' tricks
    "_cspeedups.c",  # the C half of _speedups (optional: built where a compiler is)
    "_cspeedups.pyi",
    "_wire.py",  # the brokers' wire protocols of _speedups' tricks
    "_gc.py",  # the collector paused, for _speedups' gc_paused
    "_words.py",  # counts in messages: 1 row, 2 rows
    "_kafka.py",  # the Kafka URL, client and error kinds: its sink, checkpoint, consumer
    "_connect.py",  # column values as Kafka Connect writes them (for debezium.py)
    "debezium.py",  # Debezium's change event envelope: written and read back
    "checkpoint.py",
    "checkpoint",
    "sources",
    "store",
    "sinks",
    "relay.py",
    "_delivery.py",
    "metrics.py",
    "monitor.py",  # a running relay's or consumer's lag, stalls and reports
    "status.py",  # what rowcast status shows: the reports read back
    "tracing.py",  # optional OpenTelemetry spans (rowcast[otel])
    "dlq",  # dead letters of consumers and relays: see, replay, drop
    "consume",
    "audit",
    "cache",
    "cli",
    "testing",
    "ui",
    "_orm",
}


# sources/: the base, one module or subpackage per capture method (DESIGN's layout)
SOURCES = {
    "__init__.py",
    "base.py",
    "health.py",  # LogHealth: what every log source's server says about its log
    "_process.py",
    "_snapshot.py",
    "_reader.py",  # who a reader is: what it owns is named after its checkpoint
    "_leftovers.py",  # what rowcast leaves in a database, for rowcast uninstall
    "_backfill.py",  # backfills while streaming: chunks between watermarks
    "_job.py",  # a backfill request as one reader runs it, and a chunk's window
    "_progress.py",  # a reader's progress rows on backfill requests
    "_heartbeat.py",  # a tail's heartbeat while it has a backfill unfinished
    "_where.py",  # a backfill's --where: one SQL condition
    "_request.py",  # what a backfill request asks: its tables, condition and chunk
    "_rows.py",  # a chunk's rows as the driver gave them, made into Changes when handed out
    "backfills.py",  # backfill requests: ask, cancel, follow
    "signal.py",  # rowcast_signal, through which backfills are asked for
    "sqlalchemy.py",
    "outbox",
    "mysql",
    "postgres",
    "sqlite",
}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_imports(name: str) -> None:
    if name == "rowcast.__main__":
        pytest.skip("running it runs the command")
    importlib.import_module(name)


def test_the_import_graph_sees_the_imports() -> None:
    graph = _graph(lazy=False)
    assert "rowcast.cli.group" in graph["rowcast.cli"]
    assert "rowcast.cli.tail" in graph["rowcast.cli"]
    assert "rowcast.errors" in graph["rowcast.cli.group"]
    assert "rowcast" in graph["rowcast.cli.group"]  # from .. import __version__
    assert "rowcast.sinks._nats" in graph["rowcast.consume.nats"]
    assert "rowcast.store" not in graph["rowcast.store.base"]  # its own package
    lazy = _graph(lazy=True)
    assert "rowcast.cli.demo_shop" not in graph["rowcast.cli.demo"]
    assert "rowcast.cli.demo_shop" in lazy["rowcast.cli.demo"]  # inside the command
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset({"a", "b", "c"})]


def test_no_import_cycle_at_module_level() -> None:
    assert _cycles(_graph(lazy=False)) == []


def test_no_import_cycle_through_lazy_imports_either() -> None:
    cycles = set(_cycles(_graph(lazy=True)))
    assert cycles == KNOWN_LAZY_CYCLES  # a known cycle that is gone leaves the list too


def test_no_module_imports_by_computed_name_when_imported() -> None:
    # the graph above cannot follow importlib.import_module(f".{name}"): such a loop
    # at module level once hid a cycle (cli.py importing modules that imported it)
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for call in _calls(tree):
            func = call.func
            called = func.attr if isinstance(func, ast.Attribute) else None
            called = func.id if isinstance(func, ast.Name) else called
            assert called not in ("import_module", "__import__"), name


def test_nothing_downstream_imports_a_source() -> None:
    importers = {
        name
        for name, targets in _graph(lazy=True).items()
        if name != "rowcast"
        and not name.startswith(MAY_OPEN_SOURCES)
        and any(t == "rowcast.sources" or t.startswith("rowcast.sources.") for t in targets)
    }
    assert importers == set()
    # the ORM capture that audit shares with the SQLAlchemy source lives outside sources/
    assert "rowcast._orm.flush" in _graph(lazy=True)["rowcast.audit._session"]


def test_the_package_root_shows_only_the_flow() -> None:
    here = {p.name for p in SRC.iterdir() if p.name != "__pycache__" and not _built(p)}
    assert here - ROOT == set()


def _built(path: Path) -> bool:
    """Whether `path` is a C extension built in place from a source beside it."""
    return any(
        path.name.endswith(suffix) and (path.parent / (path.name[: -len(suffix)] + ".c")).exists()
        for suffix in importlib.machinery.EXTENSION_SUFFIXES
    )


def test_the_c_extensions_are_seen_as_built_in_place() -> None:
    assert {"rowcast._cspeedups"} == EXTENSIONS
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    assert _built(SRC / f"_cspeedups{suffix}")
    assert not _built(SRC / f"_nothing{suffix}")
    assert not _built(SRC / "_cspeedups.c")


def test_each_log_source_is_a_subpackage_with_its_readers() -> None:
    here = {p.name for p in (SRC / "sources").iterdir() if p.name != "__pycache__"}
    assert here - SOURCES == set()
    for database in ("mysql", "postgres", "sqlite"):
        assert f"rowcast.sources.{database}.source" in MODULES


def test_no_module_is_over_500_lines() -> None:
    # one concept per module: a module that grows past this splits along a seam
    lengths = {
        name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in MODULES.items()
    }
    assert {name: n for name, n in lengths.items() if n > 500} == {}
