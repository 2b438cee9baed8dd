"""Conformance suites shipped with rowcast, for its own backends and for yours.

Each module holds one plain pytest class per contract (e.g.
`rowcast.testing.checkpoint.CheckpointContract`); a backend's test file
subclasses it and provides a factory. These modules import pytest, so import
them only from tests.
"""

from .source import SourceContract

__all__ = ["SourceContract"]
