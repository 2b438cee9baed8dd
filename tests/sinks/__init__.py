"""Tests of the relay sinks; the broker ones need real servers (skipped when absent, not in CI)."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest

from tests.conftest import IN_CI

NATS_URL = os.environ.get("ROWCAST_TEST_NATS", "nats://127.0.0.1:4222")
RABBITMQ_URL = os.environ.get("ROWCAST_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/%2F")


def require_port(name: str, url: str, default_port: int) -> str:
    """`url` when its server accepts TCP connections; skip the test if not, but fail in CI."""
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 2
        ):
            pass
    except OSError as error:
        message = f"{name} server not reachable at {url}: {error}"
        if IN_CI:
            pytest.fail(message + " (CI=true: the server must run)")
        pytest.skip(message)
    return url


def require_nats() -> str:
    """The URL of the test NATS server (JetStream on)."""
    return require_port("nats", NATS_URL, 4222)


def require_rabbitmq() -> str:
    """The URL of the test RabbitMQ server."""
    return require_port("rabbitmq", RABBITMQ_URL, 5672)
