"""Fixtures shared by the store tests."""

from __future__ import annotations

import pytest

from tests.conftest import require_server


@pytest.fixture(scope="module")
def server() -> str:
    """The PostgreSQL test server's libpq URL (skips when it is down, fails in CI)."""
    return require_server("postgresql").replace("postgresql+psycopg://", "postgresql://", 1)
