"""Cache keys: what ``__cache_keys__`` declares, and the typed, stable strings made of it.

A class declares the attribute sets that each identify one object::

    class User:
        __cache_keys__ = ["id", ("tenant", "email")]

Every entry is an attribute name or a tuple of names; a key dict names the
attributes of one entry, in any order (``{"email": e, "tenant": t}``). The
key string is ``<namespace>:<module>.<qualname>|<attr>=<value>|...`` with the
attributes sorted by name and each value written with its type, so it is the
same in every process (no ``hash()``) and ``123`` and ``"123"`` are two keys:

==============  =============================  ===============================
type            written                        note
==============  =============================  ===============================
int, bool       ``i123``                       ``True`` is ``i1``: databases without a
                                               boolean type give back 0 / 1
str             ``sabc`` / ``s%C3%A9%7C``      percent-encoded unless ASCII letters/digits
float           ``f1.5``                       ``repr``
Decimal         ``d1.5``                       normalized: ``Decimal("1.50")`` is ``d1.5``
bytes           ``x00ff``                      hex
UUID            ``u<32 hex>``
datetime        ``t2024-05-01T12:00:00``       ISO 8601; aware is written in UTC
                                               (the same instant from any zone is
                                               one key); naive and aware differ
date, time      ``D2024-05-01``, ``T12:00:00``
None            ``~``
Enum member     its value, as above
==============  =============================  ===============================

Any other type raises `TypeError`.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from ..errors import ConfigError

__all__ = ["ClassKeys", "class_keys", "encode_value", "key_classes"]


def encode_value(value: Any) -> str:
    """One attribute value of a key, written with its type (see the module docstring)."""
    kind: type = type(value)
    if kind is int:
        return f"i{value}"
    if kind is str:
        text: str = value
        if text.isascii() and text.isalnum():
            return "s" + text
        return "s" + quote(text, safe="")
    if value is None:
        return "~"
    if isinstance(value, enum.Enum):
        inner: Any = value.value
        return encode_value(inner)
    if isinstance(value, bool | int):
        return f"i{int(value)}"
    if isinstance(value, str):
        return encode_value(str(value))
    if isinstance(value, float):
        return f"f{value!r}"
    if isinstance(value, Decimal):
        return f"d{value.normalize()}"
    if isinstance(value, bytes | bytearray | memoryview):
        return "x" + bytes(value).hex()
    if isinstance(value, uuid.UUID):
        return "u" + value.hex
    if isinstance(value, dt.datetime):
        if value.utcoffset() is not None:  # one instant, one key, whatever the zone
            value = value.astimezone(dt.UTC)
        return "t" + quote(value.isoformat(), safe=":-.")
    if isinstance(value, dt.date):
        return "D" + value.isoformat()
    if isinstance(value, dt.time):
        return "T" + quote(value.isoformat(), safe=":-.")
    raise TypeError(
        f"a cache key value cannot be of type {kind.__module__}.{kind.__qualname__}: "
        "use int, str, float, Decimal, bytes, UUID, date/time, bool, None or an Enum"
    )


class ClassKeys:
    """The declared keys of one class: ``names`` (sorted attribute tuples) and ``path``."""

    __slots__ = ("_lookup", "cls", "names", "path", "prefix")

    def __init__(self, cls: type) -> None:
        declared = getattr(cls, "__cache_keys__", None)
        if declared is None:
            raise ConfigError(
                f"{cls.__qualname__} has no __cache_keys__: declare the attributes that "
                'identify one object, e.g. __cache_keys__ = ["id", ("tenant", "email")]'
            )
        if isinstance(declared, str) or not isinstance(declared, Iterable):
            raise ConfigError(
                f"{cls.__qualname__}.__cache_keys__ must be a list of attribute names or "
                f"tuples of them, not {declared!r}"
            )
        names: list[tuple[str, ...]] = []
        for entry in declared:
            attrs = (entry,) if isinstance(entry, str) else entry
            if (
                not isinstance(attrs, tuple | list)
                or not attrs
                or not all(isinstance(a, str) and a for a in attrs)
                or len(set(attrs)) != len(attrs)
            ):
                raise ConfigError(
                    f"{cls.__qualname__}.__cache_keys__ entry {entry!r} must be an attribute "
                    "name or a tuple of distinct attribute names"
                )
            key = tuple(sorted(attrs))
            if key not in names:
                names.append(key)
        if not names:
            raise ConfigError(f"{cls.__qualname__}.__cache_keys__ is empty")
        self.cls = cls
        self.names: tuple[tuple[str, ...], ...] = tuple(names)
        self.path = f"{cls.__module__}.{cls.__qualname__}"
        self.prefix = self.path + "|"
        # a key dict's names as given (any order) -> the sorted names
        self._lookup: dict[tuple[str, ...], tuple[str, ...]] = {}

    def names_of(self, keydict: Mapping[str, Any]) -> tuple[str, ...]:
        """The declared key `keydict` names, sorted; `ConfigError` when it names none."""
        is_map = type(keydict) is dict or isinstance(keydict, Mapping)
        given = tuple(keydict) if is_map else None
        names = self._lookup.get(given) if given is not None else None
        if names is None:
            if given is None or not all(isinstance(n, str) for n in given):
                raise ConfigError(
                    f"a key of {self.cls.__qualname__} is a dict of attribute values, "
                    f"e.g. {{{self.names[0][0]!r}: ...}}, not {keydict!r}"
                )
            wanted = tuple(sorted(given))
            if wanted not in self.names:
                known = ", ".join(repr(n[0] if len(n) == 1 else n) for n in self.names)
                raise ConfigError(
                    f"{self.cls.__qualname__} has no cache key {wanted!r}; "
                    f"its __cache_keys__ are {known}"
                )
            names = self._lookup[given] = wanted
        return names

    def key(self, names: tuple[str, ...], values: Mapping[str, Any]) -> str:
        """The key string (without namespace) of `names` taken from `values`."""
        if len(names) == 1:
            name = names[0]
            return f"{self.prefix}{name}={encode_value(values[name])}"
        return self.prefix + "|".join(f"{n}={encode_value(values[n])}" for n in names)

    def key_of(self, keydict: Mapping[str, Any]) -> str:
        """The key string of a key dict such as ``{"id": 1}``."""
        return self.key(self.names_of(keydict), keydict)

    def keys_of_object(self, obj: object) -> list[str]:
        """The key strings of `obj` under this class, one per declared key."""
        keys = []
        for names in self.names:
            try:
                values = {n: getattr(obj, n) for n in names}
            except AttributeError as e:
                raise ConfigError(
                    f"{type(obj).__qualname__} object has no attribute named in "
                    f"{self.cls.__qualname__}.__cache_keys__: {e}"
                ) from e
            keys.append(self.key(names, values))
        return keys

    def keys_of_row(self, attrs: Mapping[str, Any]) -> list[str]:
        """The key strings of every declared key whose attributes are all in `attrs`."""
        return [self.key(names, attrs) for names in self.names if all(n in attrs for n in names)]


_KEYS: dict[type, ClassKeys] = {}
_CLASSES: dict[tuple[type, bool], tuple[ClassKeys, ...]] = {}


def class_keys(cls: type) -> ClassKeys:
    """The (cached) `ClassKeys` of `cls`; `ConfigError` when its declaration is wrong."""
    found = _KEYS.get(cls)
    if found is None:
        if not isinstance(cls, type):
            raise ConfigError(f"expected a class with __cache_keys__, not {cls!r}")
        found = _KEYS[cls] = ClassKeys(cls)
    return found


def key_classes(cls: type, polymorphic: bool) -> tuple[ClassKeys, ...]:
    """The classes an object of `cls` is stored under: itself, and when `polymorphic`
    every ancestor that declares ``__cache_keys__`` in its own body."""
    found = _CLASSES.get((cls, polymorphic))
    if found is None:
        own = [class_keys(cls)]
        if polymorphic:
            own += [class_keys(c) for c in cls.__mro__[1:] if "__cache_keys__" in vars(c)]
        found = _CLASSES[(cls, polymorphic)] = tuple(own)
    return found
