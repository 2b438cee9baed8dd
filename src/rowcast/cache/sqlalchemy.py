"""`SQLAlchemyCache`: the database itself as the persistent bottom layer of a chain.

::

    cache = SQLAlchemyCache(Session)          # a sessionmaker (or any session factory)
    cache.put(user)                           # session.merge(user); commit
    cache.get(User, {"email": "a@b.test"})    # SELECT ... WHERE email = ...
    ChainedCache([MemoryCache(), RedisCache(url), cache])

For SQLAlchemy-mapped classes whose ``__cache_keys__`` name mapped
attributes. Each call runs in its own session and transaction:

* ``put`` / ``batch_put`` merge the objects (INSERT or UPDATE by primary key)
  and commit; ``delete`` / ``batch_delete`` delete their rows and commit.
* ``get`` / ``batch_get`` select by key attributes (a batch is one SELECT per
  key shape, 500 keys per statement); objects come back detached, with their
  column attributes loaded.
* ``get_or_load`` only ever *inserts* what the loader returns: if the row
  appeared meanwhile, the database's row wins and is returned. One loader per
  key at a time in this process (the database's unique keys guard the rest).
* Changes followed with `Cache.follow` leave this layer alone: it is where the
  changes happen.

Database errors are raised as `CacheError`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import and_, inspect, or_, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Mapper, Session

from ..errors import CacheError, ConfigError
from ._keys import class_keys
from .base import Cache, KeyDict

__all__ = ["SQLAlchemyCache"]

T = TypeVar("T")
_CHUNK = 500
# key -> the lock its loader holds and how many threads hold or wait for it; shared by
# every instance in this process (the entry goes when the last of them is done)
_LOCKS: dict[str, tuple[threading.Lock, list[int]]] = {}
_GUARD = threading.Lock()


def _mapper(cls: type) -> Mapper[Any]:
    mapper: Any = inspect(cls, raiseerr=False)
    if not isinstance(mapper, Mapper):
        raise ConfigError(f"SQLAlchemyCache stores mapped classes only; {cls!r} is not mapped")
    return mapper


class SQLAlchemyCache(Cache):
    """The database behind `session_factory` (a callable returning a new `Session`)."""

    def __init__(self, session_factory: Callable[[], Session]) -> None:
        if not callable(session_factory):
            raise ConfigError(
                f"SQLAlchemyCache needs a session factory such as a sessionmaker, "
                f"not {session_factory!r}"
            )
        self.session_factory = session_factory

    @contextmanager
    def _session(self, what: str) -> Iterator[Session]:
        try:
            with self.session_factory() as session:
                yield session
        except SQLAlchemyError as e:
            raise CacheError(f"SQLAlchemyCache: {what} failed: {e}") from e

    # ------------------------------------------------------------ writes

    def put(self, obj: object) -> None:
        self.batch_put((obj,))

    def batch_put(self, objs: Iterable[object]) -> None:
        objs = list(objs)
        for obj in objs:
            _mapper(type(obj))
        if not objs:
            return
        with self._session("put") as session:
            for obj in objs:
                session.merge(obj)
            session.commit()

    def delete(self, obj: object) -> None:
        self.batch_delete((obj,))

    def batch_delete(self, objs: Iterable[object]) -> None:
        objs = list(objs)
        if not objs:
            return
        with self._session("delete") as session:
            for obj in objs:
                mapper = _mapper(type(obj))
                row = session.get(mapper.class_, mapper.primary_key_from_instance(obj))
                if row is not None:
                    session.delete(row)
            session.commit()

    def _forget(self, rows: Sequence[tuple[type, Mapping[str, Any]]]) -> None:
        """Nothing to do: the change happened in this very database."""

    def _remember(self, objs: Sequence[object]) -> None:
        """Nothing to do: the database already holds the changed row."""

    # ------------------------------------------------------------ reads

    def get(self, cls: type[T], keydict: KeyDict) -> T | None:
        return self.batch_get(cls, [keydict])[0]

    def batch_get(self, cls: type[T], keydicts: Sequence[KeyDict]) -> list[T | None]:
        ck = class_keys(cls)
        _mapper(cls)
        wanted = [ck.key_of(kd) for kd in keydicts]
        by_shape: dict[tuple[str, ...], list[KeyDict]] = {}
        for kd in keydicts:
            by_shape.setdefault(ck.names_of(kd), []).append(kd)
        found: dict[str, T] = {}
        with self._session("get") as session:
            for names, kds in by_shape.items():
                for start in range(0, len(kds), _CHUNK):
                    chunk = kds[start : start + _CHUNK]
                    if len(names) == 1:
                        column = getattr(cls, names[0])
                        where = column.in_([kd[names[0]] for kd in chunk])
                    else:
                        where = or_(
                            *(and_(*(getattr(cls, n) == kd[n] for n in names)) for kd in chunk)
                        )
                    for obj in session.scalars(select(cls).where(where)):
                        found[ck.key(names, {n: getattr(obj, n) for n in names})] = obj
            session.expunge_all()
        return [found.get(key) for key in wanted]

    def get_or_load(
        self, cls: type[T], keydict: KeyDict, loader: Callable[[], T | None]
    ) -> T | None:
        key = class_keys(cls).key_of(keydict)
        with _GUARD:
            lock, users = _LOCKS.setdefault(key, (threading.Lock(), [0]))
            users[0] += 1
        try:
            with lock:
                found = self.get(cls, keydict)
                if found is not None:
                    return found
                obj = loader()
                if obj is None:
                    return None
                return self._insert(cls, keydict, obj)
        finally:
            with _GUARD:
                users[0] -= 1
                if not users[0]:
                    del _LOCKS[key]

    def batch_get_or_load(
        self,
        cls: type[T],
        keydicts: Sequence[KeyDict],
        loader: Callable[[list[KeyDict]], Sequence[T | None]],
    ) -> list[T | None]:
        results = self.batch_get(cls, keydicts)
        missed = [i for i, found in enumerate(results) if found is None]
        if not missed:
            return results
        loaded = list(loader([keydicts[i] for i in missed]))
        if len(loaded) != len(missed):
            raise ConfigError(
                f"a batch loader must return one result per key dict: got {len(loaded)} "
                f"for {len(missed)}"
            )
        for i, obj in zip(missed, loaded, strict=True):
            results[i] = None if obj is None else self._insert(cls, keydicts[i], obj)
        return results

    def _insert(self, cls: type[T], keydict: KeyDict, obj: T) -> T | None:
        """Insert `obj` unless its row exists; the database's row wins (and is returned)."""
        mapper = _mapper(type(obj))
        try:
            with self._session("fill") as session:
                if session.get(mapper.class_, mapper.primary_key_from_instance(obj)) is None:
                    session.merge(obj)
                    session.commit()
                    return obj
        except CacheError as e:
            if not isinstance(e.__cause__, IntegrityError):
                raise
        return self.get(cls, keydict)  # a concurrent writer's row
