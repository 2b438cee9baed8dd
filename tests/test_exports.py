"""The public face: what `import rowcast` offers is deliberate."""

from __future__ import annotations

from types import ModuleType

import rowcast
from rowcast import errors


def test_all_is_exactly_the_public_names() -> None:
    public = {
        name
        for name in dir(rowcast)
        if not name.startswith("_") and not isinstance(getattr(rowcast, name), ModuleType)
    }
    assert set(rowcast.__all__) - {"__version__"} == public
    assert all(hasattr(rowcast, name) for name in rowcast.__all__)


def test_every_error_is_a_rowcast_error() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        if not issubclass(cls, Warning):
            assert issubclass(cls, errors.RowcastError), name
    assert issubclass(errors.ConfigError, ValueError)
