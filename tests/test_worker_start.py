"""A worker with a bad setting or an unreachable dependency stops at once with one line that says what to fix; a
worker starts without Faust's pause for tables it has none of, and stops cleanly."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from collections.abc import Callable

import pytest

from stream.embedded import StackInfo, free_port, stop
from tests.support.harness import Deployment, metric_value, metrics_text, wait_for
from tests.support.truth import generate


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


@pytest.mark.integration  # building Faust's app starts a process
def test_the_worker_declares_no_table_and_its_table_manager_starts_without_faust_s_pause(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from unittest.mock import AsyncMock

    from stream.app import create_app
    from stream.faust_patches import NoTables
    from stream.settings import Settings

    app = create_app(Settings(web_port=free_port()))  # builds the app and its agents; connects to nothing
    tables = app.tables
    assert isinstance(tables, NoTables) and len(tables) == 0
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    update, recovery = AsyncMock(), AsyncMock()
    monkeypatch.setattr(tables, "sleep", sleep)
    monkeypatch.setattr(tables, "_update_channels", update)
    monkeypatch.setattr(type(tables), "recovery", property(lambda _: recovery))
    asyncio.run(tables.on_start())
    assert slept == [] and update.await_count == 1 and recovery.start.await_count == 1


@pytest.mark.integration
def test_a_worker_asked_to_stop_exits_0_with_every_task_finished(deploy: Callable[..., Deployment]) -> None:
    dep = deploy()
    worker = dep.start_worker()
    dep.send("predictions", generate(random.Random(3), 20)[0])
    port = worker.web_port  # type: ignore[attr-defined]
    wait_for(lambda: metric_value(metrics_text(port), "trustgap_events_total", result="applied") == 20, 60,
             what="the predictions to be applied")
    stop(worker, 20)
    assert worker.returncode == 0
    log = "\n".join(p.read_text() for p in dep.logdir.glob(f"{dep.name}-worker*.log"))
    assert "Closing event loop" in log
    # (the broker may answer a new group's first coordinator request with an error: aiokafka logs it and retries)
    assert "Traceback" not in log and "destroyed but it is pending" not in log, log[-3000:]
    assert "Exception" not in log.split("Signal received: 15")[-1], log[-3000:]
