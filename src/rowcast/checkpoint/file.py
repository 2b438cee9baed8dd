"""`FileCheckpoint`: a checkpoint in a JSON file (a plain path or ``file:///abs/path``)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import ConfigError, StoreError
from .base import BaseCheckpoint

__all__ = ["FileCheckpoint"]


class FileCheckpoint(BaseCheckpoint):
    """A JSON file ``{"name", "position", "updated_at"}``, replaced atomically on each save.

    `path` is the file; left out, it is `url` itself (a plain path) or the path of
    a ``file:///abs/path`` URL. Name ``"default"`` lives at `path` itself, any other
    name at ``<path>.<name>``. The parent directory is created when missing.
    Several processes may share the file; a reader sees the old or the new
    content, never a mix.
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
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            self._fail(f"creating directory {str(self.path.parent)!r}", e)

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

    def _save(self, position: str) -> None:
        record = {"name": self.name, "position": position, "updated_at": time.time()}
        data = json.dumps(record, ensure_ascii=False) + "\n"
        directory = self.path.parent
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
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
            self._fail(f"writing {str(self.path)!r}", e)


def _path(url: str) -> str:
    """The file a plain path or a ``file:///abs/path`` URL names."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(f"{url}: a file URL has no host; write file:///abs/path")
    return unquote(parts.path)
