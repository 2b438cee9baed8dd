"""Shared helpers of the cache tests: the memcached server, like the others in tests/conftest.py."""

from __future__ import annotations

import os
import socket

import pytest

from tests.conftest import IN_CI

MEMCACHED_URL = os.environ.get("ROWCAST_TEST_MEMCACHED", "memcached://127.0.0.1:11211")


def require_memcached() -> str:
    """The URL of the test memcached; skip the test when it is down, but fail in CI."""
    host, _, port = MEMCACHED_URL.removeprefix("memcached://").partition(":")
    try:
        with socket.create_connection((host, int(port or 11211)), timeout=2) as conn:
            conn.sendall(b"version\r\n")
            if not conn.recv(64).startswith(b"VERSION"):
                raise OSError("not a memcached server")
    except OSError as error:
        message = f"memcached server not reachable at {MEMCACHED_URL}: {error}"
        if IN_CI:
            pytest.fail(message + " (CI=true: scripts/services.sh starts it)")
        pytest.skip(message)
    return MEMCACHED_URL
