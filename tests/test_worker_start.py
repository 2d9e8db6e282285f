"""A worker with a bad setting or an unreachable dependency stops at once with one line that says what to fix."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from stream.embedded import StackInfo, free_port


def run_worker(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stream.cli", "worker"], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


@pytest.mark.integration
@pytest.mark.parametrize(("env", "message"), [
    ({"TRUSTGAP_DEFAULTS__WINDOW_SECONDS": "0"}, "bad setting defaults.window_seconds"),
    ({"TRUSTGAP_TOPIC_PARTITIONS": "lots"}, "TRUSTGAP_TOPIC_PARTITIONS"),
    ({"TRUSTGAP_MODELS__claims__BAND_CUTS": "[0.9, 0.1]"}, "band_cuts must be ascending"),
])
def test_bad_settings_exit_2_with_one_line(env: dict[str, str], message: str) -> None:
    result = run_worker(env)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


@pytest.mark.integration
def test_unreachable_redis_is_named(stack: StackInfo) -> None:
    result = run_worker({"TRUSTGAP_BROKER_URL": stack.broker_url,
                         "TRUSTGAP_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert result.returncode == 1
    assert "redis unreachable" in result.stderr and "TRUSTGAP_REDIS_URL" in result.stderr


@pytest.mark.integration
def test_unreachable_broker_is_named() -> None:
    result = run_worker({"TRUSTGAP_BROKER_URL": f"kafka://127.0.0.1:{free_port()}"})
    assert result.returncode == 1
    assert "unreachable" in result.stderr and "TRUSTGAP_BROKER_URL" in result.stderr


@pytest.mark.integration
def test_a_session_timeout_the_broker_would_refuse_exits_2_with_one_line(stack: StackInfo) -> None:
    # Apache Kafka takes sessions of 6 s to 30 min by default; below that aiokafka's join fails once and the worker
    # would sit outside its group consuming nothing
    result = run_worker({"TRUSTGAP_BROKER_URL": stack.broker_url, "TRUSTGAP_REDIS_URL": stack.redis_url,
                         "TRUSTGAP_BROKER_SESSION_TIMEOUT": "2", "TRUSTGAP_BROKER_HEARTBEAT_INTERVAL": "0.5",
                         "TRUSTGAP_WEB_PORT": str(free_port())})
    assert result.returncode == 2
    assert "accepts consumer sessions of 6s to 1800s" in result.stderr
    assert "TRUSTGAP_BROKER_SESSION_TIMEOUT" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
