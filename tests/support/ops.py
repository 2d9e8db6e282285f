"""Run the real `prometheus` and `prometheus-alertmanager` binaries on free loopback ports for the deploy tests."""

from __future__ import annotations

import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from stream.embedded import free_port, stop
from tests.support.harness import wait_for

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def binary(name: str) -> str:
    """Path of a tool the deploy tests need; `make test` installs them (Debian packages)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `make test`, which apt-get installs prometheus and "
                    "prometheus-alertmanager when absent")
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=REPO)


def http_json(url: str, body: Any = None) -> Any:
    data = orjson.dumps(body) if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=10) as resp:
        raw = resp.read()
        return orjson.loads(raw) if raw else None


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.HTTPError):
        return False


@dataclass
class Service:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path


@contextmanager
def _serve(args: list[str], url: str, log: Path) -> Iterator[Service]:
    out = log.open("ab")
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: _ready(url) or proc.poll() is not None, 30, what=f"{args[0]} to be ready")
        assert proc.poll() is None, f"{args[0]} exited with {proc.returncode}: {log.read_text()[-2000:]}"
        yield Service(proc, url, log)
    finally:
        stop(proc, 10)
        out.close()


@contextmanager
def alertmanager(tmp: Path, config: Path = DEPLOY / "alertmanager" / "alertmanager.yml") -> Iterator[Service]:
    """The real Alertmanager with the project's config, clustering off, on a free loopback port."""
    port = free_port()
    data = tmp / "alertmanager"
    data.mkdir(parents=True, exist_ok=True)
    with _serve([binary("prometheus-alertmanager"), f"--config.file={config}", f"--storage.path={data}",
                 f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=warn"],
                f"http://127.0.0.1:{port}", tmp / "alertmanager.log") as svc:
        yield svc


@contextmanager
def prometheus(tmp: Path, config: dict[str, Any]) -> Iterator[Service]:
    """The real Prometheus with `config` (a prometheus.yml document) on a free loopback port."""
    port = free_port()
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    with _serve([binary("prometheus"), f"--config.file={tmp / 'prometheus.yml'}",
                 f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
                 "--log.level=warn"], f"http://127.0.0.1:{port}", tmp / "prometheus.log") as svc:
        yield svc


def promql(url: str, expr: str) -> Any:
    """Result of an instant query; raises AssertionError with Prometheus's error when it does not parse."""
    try:
        body = http_json(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
    except urllib.error.HTTPError as err:
        raise AssertionError(f"{expr!r}: {err.code} {err.read().decode()}") from None
    assert body["status"] == "success", body
    return body["data"]["result"]
