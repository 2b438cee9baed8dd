"""URL helpers shared by every backend family."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = ["masked"]


def masked(url: str) -> str:
    """`url` with its password, if any, replaced by ``***``: fit to print or log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
