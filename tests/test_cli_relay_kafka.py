"""``rowcast relay --to kafka://``: what is wrong with Kafka exits 2 at start, naming it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from rowcast.testing.sink import closed_port
from tests import kafka
from tests.conftest import require_kafka
from tests.test_cli_relay import ROWCAST
from tests.test_relay import URL

pytestmark = pytest.mark.server


def relay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ROWCAST, "relay", URL, "--tables", "test.nothing_here", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_an_unreachable_kafka_exits_2(tmp_path: Path) -> None:
    sink = f"kafka://127.0.0.1:{closed_port()}?timeout=2"
    result = relay("--to", sink, "--checkpoint", str(tmp_path / "pos"))
    assert result.returncode == 2, result.stderr
    assert f"Kafka sink {sink}: cannot reach the cluster" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "pos").exists()


@pytest.mark.parametrize("where", ["--to", "--checkpoint"])
def test_a_wrong_kafka_port_exits_2_at_once_not_after_the_clients_timeout(
    tmp_path: Path, where: str
) -> None:
    # librdkafka retried a refused connection for its 30 s before anything was said
    url = f"kafka://127.0.0.1:{closed_port()}?topic=rc_cli_nowhere"
    args = ["--to", url, "--checkpoint", str(tmp_path / "pos")]
    if where == "--checkpoint":
        args = ["--to", "-", "--checkpoint", url]
    result = relay(*args)
    assert result.returncode == 2, result.stderr
    assert "cannot reach the cluster" in result.stderr
    # said by rowcast's own look at the port, not after librdkafka gave up (31 s)
    assert f"127.0.0.1:{url.split(':')[2].split('?')[0]}: Connection refused" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_topic_with_create_false_exits_2(tmp_path: Path) -> None:
    require_kafka()
    topic = kafka.unique("rowcast-cli")
    result = relay(
        "--to", f"{kafka.KAFKA}?topic={topic}&create=false", "--checkpoint", str(tmp_path / "p")
    )
    assert result.returncode == 2, result.stderr
    assert f"topic {topic} does not exist and create=false" in result.stderr
    assert "Traceback" not in result.stderr
    assert kafka.topics(topic) == []


def test_an_unreachable_kafka_checkpoint_exits_2(tmp_path: Path) -> None:
    checkpoint = f"kafka://127.0.0.1:{closed_port()}?topic=positions&timeout=2"
    result = relay("--to", "-", "--checkpoint", checkpoint)
    assert result.returncode == 2, result.stderr
    assert "checkpoint 'default' at kafka://" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_librdkafka_option_it_does_not_know_exits_2(tmp_path: Path) -> None:
    result = relay(
        "--to", "kafka://127.0.0.1:9092?linger.msec=5", "--checkpoint", str(tmp_path / "pos")
    )
    assert result.returncode == 2, result.stderr
    assert "the Kafka client refuses its configuration" in result.stderr
    assert "linger.msec" in result.stderr
