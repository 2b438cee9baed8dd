"""Safe to expose: loopback by default, the token for everything else and for writes,
CSRF and Origin checks, no secret in any page, nothing reachable but what was given.

Each test serves a real console (uvicorn on a free port) and talks HTTP to it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from rowcast.errors import ConfigError
from rowcast.store import EventStore
from rowcast.ui import ConsoleConfig
from tests.conftest import require_server

from .conftest import keep, product_changes, served

TOKEN = "correct-horse-battery-staple"
PAGES = [
    "/streams",
    "/streams/%40all",
    "/streams/shop.product-1",
    "/rows/shop.product-1",
    "/live",
    "/pipelines",
    "/dead-letters",
    "/login",
]


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/events.db"
    with EventStore(url) as store:
        for change in product_changes():
            keep(store, change)
    return url


@pytest.fixture
def open_console(store_url: str) -> Iterator[str]:
    with served(ConsoleConfig(store=store_url, dead_letters=[store_url])) as base:
        yield base


@pytest.fixture
def locked_console(store_url: str) -> Iterator[str]:
    with served(ConsoleConfig(store=store_url, token=TOKEN, dead_letters=[store_url])) as base:
        yield base


def _login(client: httpx.Client) -> None:
    page = client.get("/login")
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert csrf is not None
    done = client.post("/login", data={"token": TOKEN, "csrf": csrf.group(1), "next": "/streams"})
    assert done.status_code == 303, done.text
    assert done.headers["location"].endswith("/streams")
    cookie = done.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert TOKEN not in done.headers["set-cookie"]


def test_any_address_but_loopback_needs_a_token() -> None:
    with pytest.raises(ConfigError, match="--token"):
        ConsoleConfig(store="memory://", host="0.0.0.0").check()
    with pytest.raises(ConfigError, match="too short"):
        ConsoleConfig(store="memory://", host="0.0.0.0", token="short").check()
    ConsoleConfig(store="memory://", host="0.0.0.0", token=TOKEN).check()
    ConsoleConfig(store="memory://", host="::1").check()


def test_without_a_token_pages_read_and_writes_are_refused(open_console: str) -> None:
    with httpx.Client(base_url=open_console) as client:
        for path in PAGES:
            page = client.get(path)
            assert page.status_code in (200, 404), (path, page.status_code)
            assert page.headers["x-frame-options"] == "DENY"
            assert "script-src 'self'" in page.headers["content-security-policy"]
        for method, path in [("GET", "/dead-letters/0/replay"), ("POST", "/dead-letters/0/drop")]:
            refused = client.request(method, path, data={"confirm": "yes"})
            assert refused.status_code == 403
            assert "read-only" in refused.text


def test_only_loopback_host_names_are_served_without_a_token(open_console: str) -> None:
    port = httpx.URL(open_console).port
    with httpx.Client(base_url=open_console) as client:
        assert client.get("/streams", headers={"host": f"localhost:{port}"}).status_code == 200
        rebound = client.get("/streams", headers={"host": f"attacker.example:{port}"})
        assert rebound.status_code == 400  # DNS rebinding: another site's name for 127.0.0.1


def test_a_token_locks_every_page_until_logged_in(locked_console: str) -> None:
    with httpx.Client(base_url=locked_console) as client:
        html = client.get("/streams", headers={"accept": "text/html"})
        assert html.status_code == 303
        assert "/login?next=%2Fstreams" in html.headers["location"]
        assert client.get("/live/feed").status_code == 401
        assert client.get("/static/console.css").status_code == 200
        bearer = client.get("/streams", headers={"authorization": f"Bearer {TOKEN}"})
        assert bearer.status_code == 200
        _login(client)
        assert client.get("/streams").status_code == 200
        assert TOKEN not in client.get("/streams").text


def test_a_wrong_token_and_a_form_without_its_csrf_token_are_refused(locked_console: str) -> None:
    with httpx.Client(base_url=locked_console) as client:
        page = client.get("/login")
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
        assert csrf is not None
        wrong = client.post("/login", data={"token": "not-the-token-at-all", "csrf": csrf.group(1)})
        assert wrong.status_code == 403
        assert "not the token" in wrong.text
        no_csrf = client.post("/login", data={"token": TOKEN})
        assert no_csrf.status_code == 403
        _login(client)
        forged = client.post("/dead-letters/0/drop", data={"confirm": "yes", "csrf": "0" * 64})
        assert forged.status_code == 403
        assert "out of date" in forged.text
        other_site = client.post(
            "/dead-letters/0/drop",
            data={"confirm": "yes"},
            headers={"origin": "http://attacker.example"},
        )
        assert other_site.status_code == 403


def test_logging_in_never_sends_the_browser_to_another_site(locked_console: str) -> None:
    for target in ["//attacker.example/x", "https://attacker.example", "/\\attacker"]:
        with httpx.Client(base_url=locked_console) as client:
            page = client.get("/login")
            csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
            assert csrf is not None
            done = client.post(
                "/login", data={"token": TOKEN, "csrf": csrf.group(1), "next": target}
            )
            assert done.status_code == 303
            assert done.headers["location"] == "/streams", target


def test_no_file_or_url_is_reachable_but_what_was_given(open_console: str) -> None:
    with httpx.Client(base_url=open_console) as client:
        for path in [
            "/static/../config.py",
            "/static/%2e%2e/config.py",
            "/static/..%2fapp.py",
            "/static/%2e%2e%2f%2e%2e%2fpyproject.toml",
        ]:
            assert client.get(path).status_code == 404, path
        assert client.get("/dead-letters/7/replay").status_code in (400, 403)
        assert client.get("/streams/..%2F..%2Fetc%2Fpasswd").status_code == 200  # a stream name


@pytest.mark.server
def test_no_password_in_any_page(tmp_path: Path) -> None:
    server = require_server("postgresql").replace("postgresql+psycopg://", "postgresql://", 1)
    schema = f"rc_ui_{uuid.uuid4().hex[:8]}"
    password = "pw-" + uuid.uuid4().hex  # trust authentication: the server ignores it
    url = server.replace("postgres@", f"postgres:{password}@", 1) + f"?schema={schema}"
    try:
        with EventStore(url) as store:
            for change in product_changes():
                keep(store, change)
        settings = ConsoleConfig(
            store=url, source=url.split("?")[0], dead_letters=[url], checkpoints=[url], token=TOKEN
        )
        with served(settings) as base, httpx.Client(base_url=base) as client:
            _login(client)
            bodies = [client.get(path).text for path in PAGES]
            bodies.append(client.get("/dead-letters/0/replay").text)
            bodies.append(client.get("/streams?after=%00").text)
        assert "postgres:***@" in bodies[0]
        for body in bodies:
            assert password not in body
            assert TOKEN not in body
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_behind_a_proxy_under_a_path_links_and_redirects_stay_under_it(store_url: str) -> None:
    settings = ConsoleConfig(store=store_url, token=TOKEN)
    with served(settings, root_path="/rowcast") as base, httpx.Client(base_url=base) as client:
        locked = client.get("/streams", headers={"accept": "text/html"})
        assert locked.headers["location"] == "/rowcast/login?next=%2Fstreams"
        page = client.get("/streams", headers={"authorization": f"Bearer {TOKEN}"})
        assert 'href="/rowcast/streams/shop.product-1"' in page.text
        assert 'href="/rowcast/static/console.css"' in page.text
        assert client.get("/static/console.css").status_code == 200
