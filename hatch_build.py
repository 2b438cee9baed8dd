"""The wheel's build hook: compiles `rowcast._cspeedups` (src/rowcast/_cspeedups.c) with
setuptools' ``build_ext``, where a C compiler is.

Optional by design: a machine without a compiler (or Python's headers), a Python
other than CPython or one without the GIL, or ``ROWCAST_NO_C=1``, gets a pure-Python
wheel with a warning (``pip install -v`` shows it), and rowcast runs on its Python paths
(`rowcast._speedups`). A wheel is tagged for the platform it was built on; an editable
install builds the extension in place, beside its source (as ``build_ext --inplace``
does), since the package is imported from ``src/``, after removing what an earlier
install built there.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

NAME = "rowcast._cspeedups"
SOURCE = Path("src", "rowcast", "_cspeedups.c")


class CSpeedups(BuildHookInterface):
    """Compile the C speedups into the wheel, or leave them out with a warning."""

    _built: str | None = None  #: a temporary directory, until the wheel is written

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        package = Path(self.root, "src", "rowcast")
        if version == "editable":  # a build of an earlier source must not stay in use
            remove_in_place(package)
        why = _left_out()
        if why:
            self.app.display_info(f"rowcast: the C speedups are not built: {why}")
            return
        self._built = tempfile.mkdtemp(prefix="rowcast-cspeedups-")
        try:
            built = _compile(Path(self.root), Path(self._built))
        except Exception as error:  # no compiler, no headers: the Python paths
            self.app.display_warning(
                f"rowcast: the C speedups were not built ({error}); rowcast runs on "
                "its Python paths (slower backfills and SQLite snapshots)"
            )
            return
        if version == "editable":  # imported from src/: beside its source
            put_in_place(built, package)
        else:
            build_data["force_include"][str(built)] = f"rowcast/{built.name}"
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        if self._built is not None:
            shutil.rmtree(self._built, ignore_errors=True)


def _left_out() -> str:
    """Why the extension is not to be built ("": it is)."""
    if os.environ.get("ROWCAST_NO_C", "") not in ("", "0"):
        return "ROWCAST_NO_C is set"
    if sysconfig.get_config_var("Py_GIL_DISABLED"):  # it relies on the GIL
        return "this Python runs without the GIL"
    if sys.implementation.name != "cpython":
        return f"{sys.implementation.name} is not CPython"
    return ""


def _compile(root: Path, tmp: Path) -> Path:
    """The extension built in `tmp`: the path of its shared library."""
    from setuptools import Distribution, Extension
    from setuptools.command.build_ext import build_ext

    extension = Extension(NAME, [str(root / SOURCE)])
    command = build_ext(Distribution({"name": "rowcast", "ext_modules": [extension]}))
    command.build_lib, command.build_temp = str(tmp / "lib"), str(tmp / "temp")
    command.ensure_finalized()
    command.run()
    return Path(command.get_ext_fullpath(NAME))


def _in_place(package: Path) -> list[Path]:
    """The builds of the extension beside its source, of any Python."""
    stem = NAME.rpartition(".")[2]
    return [p for p in package.glob(f"{stem}.*") if p.suffix in (".so", ".pyd")]


def remove_in_place(package: Path) -> None:
    """Remove the extension's builds from `package` (an editable install's source)."""
    for path in _in_place(package):
        path.unlink(missing_ok=True)


def put_in_place(built: Path, package: Path) -> Path:
    """Put `built` into `package` as a new file (renamed over the old one, never written
    into it: a process that has the old one loaded keeps it intact)."""
    target = package / built.name
    fd, partial = tempfile.mkstemp(dir=package, prefix=f".{built.name}.")
    try:
        with os.fdopen(fd, "wb") as out, built.open("rb") as source:
            shutil.copyfileobj(source, out)
        os.chmod(partial, 0o755)
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return target
