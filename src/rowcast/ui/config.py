"""What the console is started with: the only places it will ever read or write.

Every URL the console opens is in `ConsoleConfig`, given on the command line
(``rowcast ui``): no page takes a URL or a path from a request. Pages name the
places by their index in these lists, and show them with the password masked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .._url import masked
from ..errors import ConfigError
from .security import MIN_TOKEN, is_loopback

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "ConsoleConfig"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8750


@dataclass
class ConsoleConfig:
    """The console's settings (see ``rowcast ui --help``)."""

    store: str
    checkpoints: list[str] = field(default_factory=list)
    source: str | None = None
    dead_letters: list[str] = field(default_factory=list)
    replay_to: str | None = None
    token: str | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    page: int = 50
    status_interval: float = 5.0

    def check(self) -> None:
        """Refuse what would be unsafe or cannot work: a `ConfigError` naming the fix."""
        if self.token is not None and len(self.token) < MIN_TOKEN:
            raise ConfigError(
                f"the console's token is too short ({len(self.token)} characters): give at "
                f"least {MIN_TOKEN}, e.g. from "
                "python -c 'import secrets; print(secrets.token_urlsafe())'"
            )
        if not self.token and not is_loopback(self.host):
            raise ConfigError(
                f"--host {self.host} lets other machines reach the console: give a token with "
                "--token or ROWCAST_UI_TOKEN (everyone then needs it to read or act), or keep "
                f"the default --host {DEFAULT_HOST}"
            )
        if not 0 <= self.port < 65536:
            raise ConfigError(f"--port must be between 0 (any free) and 65535, not {self.port}")

    def secrets(self) -> list[str]:
        """The passwords of every configured URL, and the token: never shown nor logged."""
        found = [self.token or ""]
        for url in [self.store, *self.checkpoints, self.source or "", *self.dead_letters]:
            try:
                password = urlsplit(url).password
            except ValueError:
                password = None
            if password:
                found.append(password)
        found.append((self.replay_to and urlsplit(self.replay_to).password) or "")
        return sorted({s for s in found if s}, key=len, reverse=True)

    @property
    def shown_store(self) -> str:
        return masked(self.store)
