"""Security for real: Apache Kafka with a SASL_SSL listener (SCRAM-SHA-512, a certificate from a test CA) and a
TLS-only redis-server with a password, configured as an operator writes it (TRUSTGAP_* env).

With the right settings the worker counts exactly, the producer SDK sends, and `trustgap status` and
`trustgap replay` work; with one setting wrong, each command stops at start with one line naming the setting and
the documented exit code. Neither password appears in any log line, any command's output or /metrics.

One broker and one Redis serve the whole module (a secured Kafka takes 5-15 s to start); each test has its own
topics and consumer group.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.admin import confluent_config
from stream.client import Client, SecurityMismatch
from tests.support.harness import Deployment, eventually, metric_value, metrics_text, wait_for
from tests.support.security import SecurePair, secure_pair

pytestmark = pytest.mark.integration

USER = "trustgap"
KAFKA_PASSWORD = "kafka-Pw-7f3c9e1a-never-logged"
REDIS_PASSWORD = "redis-Pw-4b8d2f6e-never-logged"
WRONG_PASSWORD = "wrong-Pw-0d0e1f-also-secret"
SECRETS = (KAFKA_PASSWORD, REDIS_PASSWORD, WRONG_PASSWORD)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecurePair]:
    with secure_pair(tmp_path_factory.mktemp("secure"), USER, KAFKA_PASSWORD, REDIS_PASSWORD) as p:
        yield p


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stream.cli", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


def prediction(pid: str, minute: int, hour: int = 0) -> dict[str, Any]:
    return {"schema_version": 1, "event_id": f"e-{pid}", "prediction_id": pid, "model": "m", "model_version": "1",
            "ts": f"2026-11-20T{hour:02d}:{minute:02d}:00Z", "label": "a"}


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


# --- everything works with the right settings --------------------------------------------------------------------

def test_worker_sdk_status_and_replay_work_over_sasl_ssl_and_rediss_and_count_exactly(
        pair: SecurePair, tmp_path: Path) -> None:
    dep = Deployment(pair, tmp_path, overrides=pair.env)  # type: ignore[arg-type]
    dep.create_topics()
    outputs: list[str] = []
    try:
        worker = dep.start_worker()
        port: int = worker.web_port  # type: ignore[attr-defined]
        # The SDK over SASL_SSL: 30 predictions in the 00:00 window, 5 of them sent again (same event_id),
        # and an action on each of the first 10 (4 overrides).
        with Client.from_settings(dep.settings) as tg:
            tg.check()
            for i in range(30):
                tg.log_prediction(f"s{i}", model="m", model_version="1", label="a", event_id=f"e-s{i}",
                                  ts=datetime(2026, 11, 20, 0, i, tzinfo=UTC))
            for i in range(5):
                tg.log_prediction(f"s{i}", model="m", model_version="1", label="a", event_id=f"e-s{i}",
                                  ts=datetime(2026, 11, 20, 0, i, tzinfo=UTC))
            for i in range(10):
                tg.log_action(f"s{i}", "override" if i < 4 else "accept", event_id=f"a-s{i}",
                              ts=datetime(2026, 11, 20, 0, 40 + i, tzinfo=UTC))
        assert (tg.stats.delivered, tg.stats.failed) == (45, 0)
        # `trustgap replay` over SASL_SSL: 20 more in the window, and one at 03:00 whose event time closes it.
        events = tmp_path / "events.jsonl"
        events.write_text("".join(orjson.dumps(e).decode() + "\n"
                                  for e in [*(prediction(f"r{i}", 30 + i) for i in range(20)),
                                            prediction("closer", 0, hour=3)]))
        replay = run_cli(dep.env, "replay", str(events), "--quiet")
        outputs += [replay.stdout, replay.stderr]
        assert replay.returncode == 0, replay.stderr
        assert "sent 21 events" in replay.stdout
        wait_for(lambda: metric_value(metrics_text(port), "trustgap_events_total", result="applied") == 30 + 10 + 21,
                 90, what="61 events applied through SASL_SSL and rediss://")
        text = metrics_text(port)
        assert metric_value(text, "trustgap_events_total", result="duplicate") == 5

        def closed_window() -> dict[str, Any]:
            status = run_cli(dep.env, "status", "--json")
            outputs.extend([status.stdout, status.stderr])
            assert status.returncode == 0, status.stderr
            models = {m["model"]: m for m in orjson.loads(status.stdout)["models"]}
            windows = [w for w in models["m"]["windows"] if w["start"].startswith("2026-11-20T00:00")] \
                if "m" in models else []
            assert windows, "the 00:00 window is not closed yet"
            assert windows[0]["signals"]["override_rate"]["n"] == 10, "actions not judged yet"
            return dict(windows[0])

        window = eventually(closed_window, 90, interval=1.0, what="`trustgap status` to show the closed window")
        assert window["predictions"] == 50
        assert window["signals"]["override_rate"]["rate"] == pytest.approx(0.4)
        text = metrics_text(port)
    finally:
        dep.stop_all()
    logs = "".join(p.read_text(errors="replace") for p in tmp_path.glob("*-worker*.log"))
    assert "[INFO]" in logs  # the worker logged at info level, where a leak would show
    assert_no_secret(logs, text, *outputs)


# --- each wrong setting: one line, the documented exit code ------------------------------------------------------

Change = Callable[[SecurePair], dict[str, str]]

KAFKA_CASES: dict[str, tuple[Change, tuple[str, ...]]] = {
    # the SCRAM password is not the one the broker was formatted with
    "kafka-wrong-password": (lambda p: {"TRUSTGAP_BROKER_SASL_PASSWORD": WRONG_PASSWORD},
                             ("refused the SASL login of user 'trustgap'", "TRUSTGAP_BROKER_SASL_PASSWORD")),
    # a CA that did not sign the broker's certificate
    "kafka-unknown-ca": (lambda p: {"TRUSTGAP_BROKER_SSL_CAFILE": str(p.other_ca.cert)},
                         ("presented a TLS certificate that the CA in broker_ssl_cafile", "unrelated-ca.pem",
                          "TRUSTGAP_BROKER_SSL_CAFILE")),
    # a plaintext client on the SASL_SSL listener
    "kafka-plaintext-to-tls": (lambda p: {"TRUSTGAP_BROKER_SECURITY_PROTOCOL": "PLAINTEXT"},
                               ("expects TLS but broker_security_protocol is PLAINTEXT",
                                "TRUSTGAP_BROKER_SECURITY_PROTOCOL")),
}
REDIS_CASES: dict[str, tuple[Change, tuple[str, ...]]] = {
    # a password Redis does not know
    "redis-wrong-password": (lambda p: {"TRUSTGAP_REDIS_URL": p.redis.url(WRONG_PASSWORD, p.ca.cert)},
                             ("refused the password (or user) in redis_url", "TRUSTGAP_REDIS_URL")),
    # a CA that did not sign Redis's certificate
    "redis-unknown-ca": (lambda p: {"TRUSTGAP_REDIS_URL": p.redis.url(REDIS_PASSWORD, p.other_ca.cert)},
                         ("presented a TLS certificate that the CA in ssl_ca_certs", "unrelated-ca.pem",
                          "TRUSTGAP_REDIS_URL")),
    # redis:// (no TLS) on the TLS port
    "redis-plaintext-to-tls": (lambda p: {"TRUSTGAP_REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{p.redis.port}/0"},
                               ("speaks TLS only but redis_url is redis://", "TRUSTGAP_REDIS_URL")),
}
# Which commands meet which case: replay talks to the broker only; the worker and status to both.
FAILURES = [(command, case) for command in ("worker", "status", "replay") for case in KAFKA_CASES] + \
           [(command, case) for command in ("worker", "status") for case in REDIS_CASES]


@pytest.mark.parametrize(("command", "case"), FAILURES, ids=[f"{c}-{k}" for c, k in FAILURES])
def test_a_wrong_security_setting_stops_the_command_at_start_with_one_line_and_exit_2(
        pair: SecurePair, tmp_path: Path, command: str, case: str) -> None:
    change, expected = {**KAFKA_CASES, **REDIS_CASES}[case]
    dep = Deployment(pair, tmp_path, overrides={**pair.env, **change(pair)})  # type: ignore[arg-type]
    events = tmp_path / "one.jsonl"
    events.write_text(orjson.dumps(prediction("p1", 5)).decode() + "\n")
    args = {"worker": ["worker", "--loglevel", "info"], "status": ["status"],
            "replay": ["replay", str(events), "--quiet"]}[command]
    result = run_cli({**dep.env, "TRUSTGAP_WEB_PORT": "0"}, *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trustgap: "), result.stderr
    for fragment in expected:
        assert fragment in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert_no_secret(result.stderr)


# The SDK built from librdkafka's config names librdkafka's keys; built by Client.from_settings, trustgap's settings.
SDK_SAYS = {"kafka-wrong-password": ("refused the SASL login of user 'trustgap'", "sasl.username / sasl.password"),
            "kafka-unknown-ca": ("presented a TLS certificate that the CA in ssl.ca.location", "unrelated-ca.pem"),
            "kafka-plaintext-to-tls": ("expects TLS but security.protocol is PLAINTEXT", "set security.protocol")}


@pytest.mark.parametrize("built", ["conf", "settings"])
@pytest.mark.parametrize("case", list(KAFKA_CASES))
def test_the_sdk_check_says_which_setting_the_broker_refused(pair: SecurePair, tmp_path: Path, case: str,
                                                             built: str) -> None:
    change, says = KAFKA_CASES[case]
    settings = Deployment(pair, tmp_path, overrides={**pair.env, **change(pair)}).settings  # type: ignore[arg-type]
    client = Client.from_settings(settings) if built == "settings" else Client(conf=confluent_config(settings))
    try:
        with pytest.raises(SecurityMismatch) as raised:
            client.check(timeout=20)  # refused at once: the wait is for a broker that does not answer
    finally:
        client.close(1)
    message = str(raised.value)
    assert "\n" not in message
    for fragment in (says if built == "settings" else SDK_SAYS[case]):
        assert fragment in message
    assert_no_secret(message)


def test_a_taken_web_port_stops_the_worker_with_one_line_and_exit_1(pair: SecurePair, tmp_path: Path) -> None:
    dep = Deployment(pair, tmp_path, overrides=pair.env)  # type: ignore[arg-type]
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_cli({**dep.env, "TRUSTGAP_WEB_PORT": str(port)}, "worker")
    assert result.returncode == 1, result.stderr
    assert result.stderr == (f"trustgap: the web port 127.0.0.1:{port} (/metrics, /health) is already in use by "
                             "another process; set web_port / TRUSTGAP_WEB_PORT to a free port, or stop what "
                             "listens there\n")
