"""The wheel's build hook: compiles `rowcast._cspeedups` (src/rowcast/_cspeedups.c) with
setuptools' ``build_ext``, where a C compiler is.

Optional by design: a machine without a compiler (or Python's headers), or
``ROWCAST_NO_C=1``, gets a pure-Python wheel with a warning, and rowcast runs on its
Python paths (`rowcast._speedups`). A wheel is tagged for the platform it was built on;
an editable install builds the extension in place, beside its source (as ``build_ext
--inplace`` does), since the package is imported from ``src/``.
"""

from __future__ import annotations

import os
import shutil
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
        if os.environ.get("ROWCAST_NO_C", "") not in ("", "0"):
            self.app.display_info("rowcast: ROWCAST_NO_C is set: the C speedups are not built")
            return
        self._built = tempfile.mkdtemp(prefix="rowcast-cspeedups-")
        try:
            built = _compile(Path(self.root), Path(self._built))
        except Exception as error:  # no compiler, no headers: the Python paths
            self.app.display_warning(
                f"rowcast: the C speedups were not built ({error}); rowcast runs on "
                "its Python paths (slower backfills and snapshots)"
            )
            return
        target = Path("rowcast", built.name)
        if version == "editable":  # imported from src/: beside its source
            shutil.copyfile(built, Path(self.root, "src", target))
        else:
            build_data["force_include"][str(built)] = str(target)
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        if self._built is not None:
            shutil.rmtree(self._built, ignore_errors=True)


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
