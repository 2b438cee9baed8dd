"""The workload `rowcast demo` runs: a small shop on a temporary SQLite file."""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from collections.abc import Callable

from sqlalchemy import ForeignKey, String, create_engine, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from ..hub import Hub
from ..sources.sqlalchemy import SessionCapture

__all__ = ["keep_changing", "run"]


class Base(DeclarativeBase):
    pass


class Product(Base):
    __tablename__ = "product"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40))
    price_cents: Mapped[int]
    stock: Mapped[int]


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("product.id"))
    quantity: Mapped[int]
    placed_at: Mapped[dt.datetime]


def run(url: str, hub: Hub, say: Callable[[str], None]) -> None:
    """Create the schema at `url`, capture its sessions into `hub`, run the script."""
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine)
    with SessionCapture(factory, hub=hub), factory() as session:
        _script(session, say)
    engine.dispose()


def _script(session: Session, say: Callable[[str], None]) -> None:
    say("add three products")
    pen, ink, pad = (
        Product(name="pen", price_cents=150, stock=10),
        Product(name="ink", price_cents=420, stock=3),
        Product(name="pad", price_cents=275, stock=7),
    )
    session.add_all([pen, ink, pad])
    session.commit()

    say("order two pens: one transaction, an insert and an update")
    session.add(Order(product_id=pen.id, quantity=2, placed_at=dt.datetime(2026, 1, 5, 9, 30)))
    pen.stock -= 2
    session.commit()

    say("raise the price of ink in a SAVEPOINT that is rolled back, then restock pads")
    savepoint = session.begin_nested()
    ink.price_cents = 999
    session.flush()
    savepoint.rollback()
    pad.stock += 5
    session.commit()

    say("rename the pad, then roll the whole transaction back: nothing is published")
    pad.name = "notepad"
    session.flush()
    session.rollback()

    say("touch a row without changing it: nothing is published")
    pen.name = "pen"
    session.commit()

    say("bulk UPDATE: ten percent off everything with fewer than 5 in stock")
    session.execute(
        update(Product).where(Product.stock < 5).values(price_cents=Product.price_cents * 9 / 10)
    )
    session.commit()

    say("delete the pad")
    session.delete(pad)
    session.commit()


def keep_changing(url: str, hub: Hub, stop: threading.Event, every: float = 2.0) -> None:
    """Until `stop`: every `every` seconds sell or restock a product (for ``demo --ui``)."""
    engine = create_engine(url)
    factory = sessionmaker(engine)
    with SessionCapture(factory, hub=hub), factory() as session:
        products = session.query(Product).order_by(Product.id).all()
        for n in itertools.count():
            if stop.wait(every) or not products:
                break
            product = products[n % len(products)]
            product.stock = product.stock + 5 if product.stock < 3 else product.stock - 1
            session.commit()
    engine.dispose()
