"""`FileCheckpoint`: a checkpoint in a JSON file (a plain path or ``file:///abs/path``)."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from .._url import made_directory
from ..errors import ConfigError, StoreError
from .base import BaseCheckpoint, parse_report

__all__ = ["FileCheckpoint"]


class FileCheckpoint(BaseCheckpoint):
    """A JSON file ``{"name", "position", "updated_at"}``, replaced atomically on each save.

    `path` is the file; left out, it is `url` itself (a plain path) or the path of
    a ``file:///abs/path`` URL. Name ``"default"`` lives at `path` itself, any other
    name at ``<path>.<name>``. The parent directory is created when missing.
    Several processes may share the file; a reader sees the old or the new
    content, never a mix. The report of a name (`rowcast.checkpoint.report`) is the
    hidden file ``.<file>.report.json`` beside its checkpoint file, written the same way.
    """

    def __init__(self, url: str, path: str | None = None, name: str = "default") -> None:
        super().__init__(url, name)
        if path is None:
            path = _path(url)
        if not path or path.endswith(("/", os.sep)):
            raise ConfigError(f"checkpoint path {path!r} names a directory; give a file path")
        base = Path(path).expanduser().absolute()
        self.path = base if name == "default" else base.with_name(f"{base.name}.{name}")
        if self.path.is_dir():
            raise ConfigError(f"checkpoint path {str(self.path)!r} is a directory; give a file")
        made_directory(f"checkpoint {self.url}", self.path.parent)
        directory = self.path.parent
        if not os.access(directory, os.W_OK) or (
            self.path.exists() and not os.access(self.path, os.W_OK)
        ):
            raise ConfigError(
                f"checkpoint {self.url}: this user cannot write {str(self.path)!r}; give a "
                "path in a directory this user can write"
            )

    def _load(self) -> str | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as e:
            self._fail(f"reading {str(self.path)!r}", e)
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        position = data.get("position") if isinstance(data, dict) else None
        if not isinstance(position, str) or not position:
            raise StoreError(
                f"checkpoint file {str(self.path)!r} is corrupt (expected JSON with a "
                f'"position" string, got {text[:80]!r}); restore it, or delete it to start '
                "over from the source's default start"
            )
        if data.get("name", self.name) != self.name:
            raise StoreError(
                f"checkpoint file {str(self.path)!r} belongs to checkpoint {data['name']!r}, "
                f"not {self.name!r}; was it copied or renamed by hand?"
            )
        return position

    @property
    def report_path(self) -> Path:
        """Where the report of this name is kept: ``.<file>.report.json`` beside the file."""
        return _report_path(self.path)

    @classmethod
    def read_reports(cls, url: str, name: str | None = None) -> list[dict[str, Any]]:
        """The reports kept beside the checkpoint file(s) at `url` (of `name` only, when
        given); creates nothing."""
        base = Path(_path(url)).expanduser().absolute()
        if name is not None:
            files = [
                _report_path(base if name == "default" else base.with_name(f"{base.name}.{name}"))
            ]
        else:
            pattern = glob.escape(f".{base.name}")
            files = sorted(
                {
                    *base.parent.glob(f"{pattern}.report.json"),
                    *base.parent.glob(f"{pattern}.*.report.json"),
                }
            )
        reports = []
        for file in files:
            try:
                text = file.read_text(encoding="utf-8")
            except FileNotFoundError:
                continue
            except (OSError, UnicodeDecodeError) as e:
                raise StoreError(f"reading report {str(file)!r} failed: {e}") from e
            reports.append(parse_report(text, repr(str(file))))
        return reports

    def _save(self, position: str) -> None:
        record = {"name": self.name, "position": position, "updated_at": time.time()}
        self._write(self.path, json.dumps(record, ensure_ascii=False) + "\n")

    def _save_report(self, text: str) -> None:
        self._write(self.report_path, text + "\n")

    def _write(self, path: Path, data: str) -> None:
        """Replace `path` with `data` atomically and durably."""
        directory = path.parent
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            if os.name == "posix":  # make the rename itself durable
                dir_fd = os.open(directory, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as e:
            self._fail(f"writing {str(path)!r}", e)


def _report_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.report.json")


def _path(url: str) -> str:
    """The file a plain path or a ``file:///abs/path`` URL names."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(f"{url}: a file URL has no host; write file:///abs/path")
    return unquote(parts.path)
