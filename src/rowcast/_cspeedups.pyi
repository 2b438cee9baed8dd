"""The C half of `rowcast._speedups` (optional): see _cspeedups.c."""

from typing import Any

VERSION: int

def changes(
    template: Any,
    rows: list[tuple[Any, ...]],
    names: tuple[str, ...],
    key: int | tuple[int, ...],
    pk_slot: Any,
    after_slot: Any,
    skip: set[Any] | frozenset[Any] | None,
    /,
) -> list[Any]: ...
