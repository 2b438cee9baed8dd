"""Who may look and who may act: the token, the session cookie, CSRF, the Host check.

The console's rules (README, "The web console"):

* No token (only allowed on a loopback address): anyone who can reach the port
  may read, nobody may write (replay, drop): the pages say how to start it with
  one. The Host header must name a loopback address or the ``--host`` given, so a
  web page on another site cannot read the console through DNS rebinding.
* A token (``--token`` or ``ROWCAST_UI_TOKEN``; required on any other address):
  every page but the login form and the static files asks for it. The login form
  trades it for a session cookie (HttpOnly, SameSite=Strict, Secure over HTTPS)
  whose value is derived from the token and a secret of this process, so the
  token itself is never stored in the browser, and a restart ends every session.
  Scripts may send ``Authorization: Bearer <token>`` instead.
* Every form that POSTs carries a CSRF token (a hidden field) derived from the
  session; a POST whose Origin is another site is refused whatever it carries.
  (htmx only ever GETs: searching, paging, refreshing.)

`Guard` holds the secrets and answers these questions; `rowcast.ui.app` asks.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = ["COOKIE", "LOOPBACK_NAMES", "Guard", "is_loopback", "scrub"]

COOKIE = "rowcast_ui"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
MIN_TOKEN = 12  #: characters a token must have at least


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or a name) is this machine only."""
    name = host.strip("[]").lower()
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def scrub(text: str, secrets_: Iterable[str]) -> str:
    """`text` with each of `secrets_` replaced by ``***`` (for messages shown or logged)."""
    for secret in secrets_:
        if secret:
            text = text.replace(secret, "***")
    return text


def _digest(key: str, message: str) -> str:
    return hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()


class Guard:
    """The token and this process's secrets: sessions, CSRF tokens, allowed hosts."""

    def __init__(self, token: str | None, host: str) -> None:
        self.token = token or None
        self._secret = secrets.token_hex(32)  # new at each start: a restart ends sessions
        self._hosts = set(LOOPBACK_NAMES) | {host.strip("[]").lower()}

    @property
    def locked(self) -> bool:
        """Whether reading needs the token too (a token was given)."""
        return self.token is not None

    def session_value(self) -> str:
        """The session cookie's value: proof of the token without the token."""
        assert self.token is not None
        return _digest(self._secret, "session:" + self.token)

    def check_token(self, given: str) -> bool:
        return self.token is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def authenticated(self, cookie: str | None, authorization: str | None) -> bool:
        """Whether a request proves the token (session cookie or bearer header)."""
        if self.token is None:
            return False
        if cookie and hmac.compare_digest(cookie, self.session_value()):
            return True
        scheme, _, value = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and self.check_token(value.strip())

    def csrf(self, cookie: str | None) -> str:
        """The CSRF token of the session (of anonymous visitors without one)."""
        return _digest(self._secret, "csrf:" + (cookie or "-"))

    def csrf_ok(self, given: str | None, cookie: str | None) -> bool:
        return bool(given) and hmac.compare_digest(str(given), self.csrf(cookie))

    def host_ok(self, host_header: str | None) -> bool:
        """Whether the Host header may be served (any, once a token guards the console)."""
        if self.locked:
            return True
        if not host_header:
            return False
        name = urlsplit(f"//{host_header}").hostname or ""
        return name.lower() in self._hosts or is_loopback(name)

    @staticmethod
    def same_origin(origin: str | None, host_header: str | None) -> bool:
        """Whether a POST's Origin (when the browser sent one) is this console."""
        if not origin:
            return True  # old browsers and scripts: the CSRF token decides
        return urlsplit(origin).netloc.lower() == (host_header or "").lower()
