"""Versioned models for the audit tests, declared afresh for each test in one schema."""

import datetime as dt
from types import SimpleNamespace
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, literal_column
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from rowcast.audit import Versioned

SCHEMA = "rowcast_audit"  # PostgreSQL schema / MariaDB database of these tests


def make_models(schema: str | None) -> SimpleNamespace:
    """A fresh declarative base with the test models, their tables in `schema`."""
    args: Any = {"schema": schema}
    prefix = f"{schema}." if schema else ""

    class Base(DeclarativeBase):
        pass

    class Reservation(Versioned, Base):
        """The seed's model, with an autoincrement key."""

        __tablename__ = "reservations"
        __table_args__ = args
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(50))
        date: Mapped[dt.date]
        time: Mapped[dt.time]
        party: Mapped[int]

    class Stamped(Versioned, Base):
        """Values only the database knows: server defaults, an onupdate expression."""

        __tablename__ = "audit_stamped"
        __table_args__ = args
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(20), unique=True)
        status: Mapped[str] = mapped_column(String(10), server_default="new")
        edits: Mapped[int] = mapped_column(server_default="0", onupdate=literal_column("edits + 1"))

    class Pair(Versioned, Base):
        __tablename__ = "audit_pair"
        __table_args__ = args
        a: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
        b: Mapped[str] = mapped_column(String(10), primary_key=True)
        value: Mapped[int]

    class Parent(Base):
        """Not versioned, but deleting it cascades to versioned children."""

        __tablename__ = "audit_parent"
        __table_args__ = args
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(10))
        children: Mapped[list["Child"]] = relationship(cascade="all, delete-orphan")

    class Child(Versioned, Base):
        __tablename__ = "audit_child"
        __table_args__ = args
        id: Mapped[int] = mapped_column(primary_key=True)
        parent_id: Mapped[int] = mapped_column(ForeignKey(f"{prefix}audit_parent.id"))
        name: Mapped[str] = mapped_column(String(10))

    class Plain(Base):
        """Not versioned at all."""

        __tablename__ = "audit_plain"
        __table_args__ = args
        id: Mapped[int] = mapped_column(primary_key=True)
        data: Mapped[str] = mapped_column(String(10))
        count: Mapped[int] = mapped_column(Integer, default=0)

    return SimpleNamespace(
        Base=Base,
        Reservation=Reservation,
        Stamped=Stamped,
        Pair=Pair,
        Parent=Parent,
        Child=Child,
        Plain=Plain,
    )
