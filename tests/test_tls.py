"""A worker reaches Redis over TLS with a password (`rediss://`), counts exactly, and never logs the password."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stream.embedded import free_port, stop
from tests.support.harness import Deployment, metric_value, metrics_text, wait_for

pytestmark = pytest.mark.integration
PASSWORD = "tls-s3cret-never-logged"


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server that only speaks TLS, with a self-signed certificate made here; yields its rediss:// URL."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed, so no certificate can be made for the TLS test")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    port = free_port()
    with (tmp_path / "redis.log").open("wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                                 "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file",
                                 str(cert), "--tls-auth-clients", "no", "--requirepass", PASSWORD, "--save", "",
                                 "--dir", str(tmp_path)], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={cert}"
    import redis

    wait_for(lambda: _pings(redis.Redis.from_url(url)), 20, what="the TLS redis-server")
    yield url
    stop(proc)


def _pings(client: object) -> bool:
    try:
        return bool(client.ping())  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - not up yet
        return False


def test_worker_counts_through_tls_redis_and_keeps_the_password_secret(
        deploy: Callable[..., Deployment], tls_redis: str, tmp_path: Path) -> None:
    dep = deploy(redis_url=tls_redis)
    worker = dep.start_worker()
    preds = [{"schema_version": 1, "event_id": f"e{i}", "prediction_id": f"p{i}", "model": "m",
              "model_version": "1", "ts": "2026-11-20T00:10:00Z", "label": "a"} for i in range(25)]
    dep.send("predictions", preds + preds[:5])  # five re-sent
    port = worker.web_port  # type: ignore[attr-defined]
    wait_for(lambda: metric_value(metrics_text(port), "trustgap_events_total", result="applied") == 25, 60,
             what="25 predictions applied through TLS Redis")
    wait_for(lambda: metric_value(metrics_text(port), "trustgap_events_total", result="duplicate") == 5, 30,
             what="5 duplicates recognised")
    assert PASSWORD not in metrics_text(port)
    dep.stop_all()
    logs = "".join(p.read_text(errors="replace") for p in tmp_path.glob("*worker*.log"))
    assert logs and PASSWORD not in logs
