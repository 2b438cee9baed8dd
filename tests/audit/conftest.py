"""Fixtures of the audit tests: fresh versioned models on each database."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from .models import SCHEMA, make_models


def make_schema(engine: Engine) -> str | None:
    """The schema the tests' tables live in on `engine` (None: SQLite's only one)."""
    dialect = engine.dialect.name
    if dialect == "sqlite":
        return None
    with engine.begin() as conn:
        if dialect == "postgresql":
            conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        else:
            conn.execute(text(f"CREATE DATABASE IF NOT EXISTS {SCHEMA}"))
    return SCHEMA


@pytest.fixture
def models(engine: Engine) -> Iterator[SimpleNamespace]:
    """The test models, their tables (and revision tables) fresh on `engine`."""
    made = make_models(make_schema(engine))
    made.Base.metadata.drop_all(engine)
    made.Base.metadata.create_all(engine)
    yield made
    made.Base.metadata.drop_all(engine)


@pytest.fixture
def factory(engine: Engine, models: SimpleNamespace) -> sessionmaker[Session]:
    return sessionmaker(engine)
