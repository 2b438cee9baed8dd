"""`Follower`: keeps a cache true to the row changes published on a `Hub`.

::

    hub = Hub()
    SessionCapture(Session, hub=hub)                       # this process's writes
    threading.Thread(target=BinlogSource(url).run, args=(hub,)).start()  # everyone's
    follower = cache.follow(hub, User)                     # or [User, Order],
                                                           # or {"shop.users": User}

For every committed transaction (the Hub's ``"commit"`` signal, so after the
commit and in commit order), the entries of every changed row are deleted in
one call per transaction: under each key of the row's *before* image (so a
changed key attribute loses its old key's entries) and of its *after* image,
for the class the table maps to and all its subclasses (and, on a
``polymorphic`` cache, their key-declaring ancestors). It does not matter which
source published the change: this process's `SessionCapture`, a binlog or
logical replication reader of another process's write.

``refresh=True`` stores the changed row's new object instead of only deleting
it: a SQLAlchemy-mapped object is rebuilt from the after image (the subclass
named by its polymorphic identity; rows of joined-table inheritance, whose
image holds part of the object, are deleted instead); a plain class is built
without calling ``__init__`` from the columns as attributes. Pass a function
``refresh=build(cls, attributes) -> object | None`` to build objects yourself
(None: delete only). Deleting commutes, storing does not: refresh a store that
only this follower writes (a `MemoryCache`); on a store shared by several
processes, or beside ``put`` calls of the same rows, two refreshes can land
out of commit order and leave the older row cached until it expires.

A backfill's rows (and an initial snapshot's), ``write`` changes with
``snapshot=True`` and no before image, are the row as it is: its entries under
the keys of that image are deleted (``refresh=True``: the read object is stored),
so an entry the follower left stale (it missed a change) is repaired. An
alternate key the row held before the missed change is not in the read: its
entry stays until it expires.

An old key is only known from the *before* image: a source must give whole
ones (the binlog's FULL row image, PostgreSQL's ``REPLICA IDENTITY FULL``,
both what ``rowcast doctor`` checks), else a changed alternate key keeps its
old entry until it expires.

Tables are matched by name, and by schema when one is given (``"db.users"``
in a mapping, or a mapped table's own schema). Columns map to attributes
through the mapper for mapped classes, by name otherwise. An error while
applying a transaction (a cache server down) is raised to the Hub, which logs
and counts it: the entries may then be stale until they expire.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from sqlalchemy import Table, inspect
from sqlalchemy.orm import ColumnProperty, Mapper

from ..change import Change
from ..errors import ConfigError
from ._keys import class_keys

if TYPE_CHECKING:
    from ..hub import Hub

__all__ = ["Builder", "Followed", "Follower"]

Builder: TypeAlias = Callable[[type, dict[str, Any]], object | None]


class Followed(Protocol):
    """What a `Follower` uses of its cache: the two hooks of a `rowcast.cache.Cache`.

    Named here, rather than imported, because ``Cache.follow`` builds followers:
    rowcast.cache.base imports this module, never the other way round.
    """

    def _forget(self, rows: Sequence[tuple[type, Mapping[str, Any]]]) -> None: ...

    def _remember(self, objs: Sequence[object]) -> None: ...


def _subclasses(cls: type) -> list[type]:
    found, todo = [], [cls]
    while todo:
        c = todo.pop()
        if c not in found:
            found.append(c)
            todo.extend(c.__subclasses__())
    return found


class _Target:
    """How the rows of one table become objects of one class."""

    def __init__(self, cls: type, columns: dict[str, str] | None, mapper: Mapper[Any] | None):
        self.cls = cls
        self.columns = columns  # column name -> attribute name; None: the same
        self.mapper = mapper
        self.whole = mapper is None or len(mapper.tables) == 1

    def attributes(self, row: Mapping[str, Any]) -> dict[str, Any]:
        if self.columns is None:
            return dict(row)
        return {self.columns[c]: v for c, v in row.items() if c in self.columns}

    def classes(self) -> list[type]:
        """The class and its subclasses now (models may be defined after `follow`)."""
        return [c for c in _subclasses(self.cls) if getattr(c, "__cache_keys__", None)]

    def build(self, attrs: dict[str, Any], refresh: bool | Builder) -> object | None:
        if callable(refresh):
            return refresh(self.cls, attrs)
        obj: Any
        if self.mapper is None:
            obj = object.__new__(self.cls)
            for name, value in attrs.items():
                object.__setattr__(obj, name, value)
            built: object = obj
            return built
        mapper = self.mapper
        on = mapper.polymorphic_on
        if on is not None:
            try:
                identity = attrs.get(mapper.get_property_by_column(on).key)
            except Exception:  # a SQL expression, not a column: keep the class asked for
                identity = None
            mapper = mapper.polymorphic_map.get(identity, mapper)
            if len(mapper.tables) != 1:
                return None
        obj = mapper.class_manager.new_instance()
        for name, value in attrs.items():
            setattr(obj, name, value)
        rebuilt: object = obj
        return rebuilt


def _mapped(cls: type) -> list[tuple[Table, _Target]]:
    mapper: Any = inspect(cls, raiseerr=False)
    if not isinstance(mapper, Mapper):
        return []
    targets = []
    for table in mapper.tables:
        if not isinstance(table, Table):
            continue
        columns = {}
        for column in table.columns:
            try:
                prop = mapper.get_property_by_column(column)
            except Exception:  # an unmapped column
                continue
            if isinstance(prop, ColumnProperty):
                columns[column.name] = prop.key
        targets.append((table, _Target(cls, columns, mapper)))
    return targets


class Follower:
    """A cache following a hub; `close()` stops it. Made by `Cache.follow`."""

    def __init__(
        self,
        cache: Followed,
        hub: Hub,
        models: type | Iterable[type] | Mapping[str, type],
        *,
        refresh: bool | Builder = False,
    ) -> None:
        self.cache = cache
        self.hub = hub
        self.refresh = refresh
        # (schema or None, table) -> targets
        self._targets: dict[tuple[str | None, str], list[_Target]] = {}
        if isinstance(models, Mapping):
            for name, cls in models.items():
                if not isinstance(name, str) or not name:
                    raise ConfigError(f"follow() maps table names to classes, not {name!r}")
                schema, _, table = name.rpartition(".")
                self._add(schema or None, table, cls)
        else:
            classes = [models] if isinstance(models, type) else list(models)
            if not classes:
                raise ConfigError("follow() needs a model class, a list of them or a mapping")
            for cls in classes:
                mapped = _mapped(cls) if isinstance(cls, type) else []
                if not mapped:
                    raise ConfigError(
                        f"follow() takes SQLAlchemy-mapped classes, or a mapping of table names "
                        f"to classes such as {{'users': User}}; {cls!r} is not mapped"
                    )
                class_keys(cls)
                for tbl, target in mapped:
                    self._targets.setdefault((tbl.schema, tbl.name), []).append(target)
        self._lock = threading.Lock()
        self.closed = False
        self._signal = hub.signal("commit")
        self._signal.connect(self._on_commit, weak=False)

    def _add(self, schema: str | None, table: str, cls: Any) -> None:
        if not isinstance(cls, type):
            raise ConfigError(f"follow() maps table {table!r} to a class, not {cls!r}")
        class_keys(cls)  # a wrong declaration fails now
        mapped = [t for tb, t in _mapped(cls) if tb.name == table]
        target = mapped[0] if mapped else _Target(cls, None, None)
        self._targets.setdefault((schema, table), []).append(target)

    def close(self) -> None:
        """Stop following (idempotent)."""
        if not self.closed:
            self.closed = True
            self._signal.disconnect(self._on_commit)

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _targets_of(self, change: Change) -> list[_Target]:
        found = self._targets.get((change.schema, change.table), [])
        if change.schema is not None:
            found = found + self._targets.get((None, change.table), [])
        return found

    def _on_commit(self, sender: Any, changes: list[Change], **_: Any) -> None:
        forget: list[tuple[type, dict[str, Any]]] = []
        remember: list[object] = []
        for change in changes:
            for target in self._targets_of(change):
                classes = target.classes()
                for image in (change.before, change.after):
                    if image is not None:
                        attrs = target.attributes(image)
                        forget.extend((cls, attrs) for cls in classes)
                if self.refresh and change.after is not None and target.whole:
                    obj = target.build(target.attributes(change.after), self.refresh)
                    if obj is not None:
                        remember.append(obj)
        if forget:
            with self._lock:  # one transaction at a time, in order
                self.cache._forget(forget)
                if remember:
                    self.cache._remember(remember)
