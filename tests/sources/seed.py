"""The seed workload every log source must turn into the same 13 changes, and more of the like.

It lives with `rowcast.testing.source.SourceContract`, which runs it on every log source.
`orm_write` does what one of its statements does through the ORM, on `Row` (the
contract's table ``test``), as an app with ``SessionCapture(outbox=True)`` would.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import String, delete, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from rowcast.testing.source import (
    SEED,
    SEED_BY_STATEMENT,
    SEED_EVENTS,
    SEED_SIGNATURES,
    Signature,
    events,
    workload,
)

__all__ = [
    "SEED",
    "SEED_BY_STATEMENT",
    "SEED_EVENTS",
    "SEED_SIGNATURES",
    "ContractBase",
    "Row",
    "Signature",
    "events",
    "orm_write",
    "workload",
]


class ContractBase(DeclarativeBase):
    pass


class Row(ContractBase):
    """The contract's table ``test``."""

    __tablename__ = "test"
    id: Mapped[int] = mapped_column(primary_key=True)
    data: Mapped[str | None] = mapped_column(String(20))


_INSERT = re.compile(r"INSERT INTO test \(data\) VALUES (.+)")
_UPDATE = re.compile(r"UPDATE test SET data = '([^']*)' WHERE (.+)")
_DELETE = re.compile(r"DELETE FROM test WHERE (.+)")
_WHERE = re.compile(r"(id|data) (!=|=) (\d+|'[^']*')")


def orm_write(session: Session, statement: str) -> None:
    """Do what one of the contract's SQL statements does, through the ORM."""

    def where(condition: str) -> Any:
        found = _WHERE.fullmatch(condition)
        assert found is not None, condition
        column, operator, literal = found.groups()
        value: int | str = int(literal) if literal.isdigit() else literal.strip("'")
        left = getattr(Row, column)
        return left != value if operator == "!=" else left == value

    if found := _INSERT.fullmatch(statement):
        session.add_all([Row(data=value) for value in re.findall(r"\('([^']*)'\)", found[1])])
        session.flush()
    elif found := _UPDATE.fullmatch(statement):
        session.execute(update(Row).where(where(found[2])).values(data=found[1]))
    elif found := _DELETE.fullmatch(statement):
        session.execute(delete(Row).where(where(found[1])))
    else:
        raise AssertionError(f"not one of the contract's statements: {statement!r}")
