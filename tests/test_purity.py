"""The pure core imports no I/O framework, and a model service's client stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("faust", "redis", "aiokafka", "confluent_kafka", "prometheus_client", "mode")


@pytest.mark.parametrize("module", ["stream.events", "stream.windows", "stream.detect", "stream.simulate",
                                    "stream.state.keys", "stream.settings", "stream.features", "stream.stats",
                                    "stream.recovery", "stream.offline"])
def test_core_modules_import_no_io_framework(module: str) -> None:
    code = f"import sys, {module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"{module} pulled in {out}"


def test_importing_the_app_module_connects_to_nothing() -> None:
    code = "import stream.app, stream.cli, stream.state.store; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
