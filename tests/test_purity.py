"""The pure core imports no I/O framework, a model service's client stays light, and importing connects nowhere.

The fast checks read the import graph from the source (tests/support/imports.py); the integration ones import
in a fresh interpreter, which also sees imports made dynamically, at the cost of a process each.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import stream
from tests.support.imports import loaded_by, source_of, top_level_packages

HEAVY = frozenset({"faust", "mode", "redis", "aiokafka", "confluent_kafka", "prometheus_client"})
# The pure core as the design names it; a module that moves (keys into stream/state/) is renamed here.
PURE = ["stream.events", "stream.windows", "stream.stats", "stream.detect", "stream.features", "stream.recovery",
        "stream.simulate", "stream.state.keys", "stream.settings", "stream.times", "stream.errors", "stream.offline",
        "stream.gate", "stream.judge"]
# The producer SDK a model service imports: the contract and confluent-kafka, nothing of the worker.
CLIENT_MAY_NOT = HEAVY - {"confluent_kafka"}


@pytest.mark.parametrize("module", PURE)
def test_core_module_loads_no_io_framework(module: str) -> None:
    assert source_of(module) is not None, f"{module} is listed as pure core but does not exist"
    heavy = top_level_packages(loaded_by(module)) & HEAVY
    assert not heavy, f"{module} loads {sorted(heavy)}"


def test_the_client_loads_neither_faust_nor_redis() -> None:
    heavy = top_level_packages(loaded_by("stream.client")) & CLIENT_MAY_NOT
    assert not heavy, f"stream.client loads {sorted(heavy)}"


def test_the_import_reader_sees_what_the_worker_loads() -> None:
    # The checks above pass trivially if the reader finds nothing: the worker's app does load these.
    assert {"faust", "redis", "prometheus_client"} <= top_level_packages(loaded_by("stream.app"))
    assert "stream.settings" in loaded_by("stream.detect")


def _all_stream_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(stream.__path__, "stream."))


@pytest.mark.integration
@pytest.mark.parametrize("module", PURE)
def test_core_module_imported_alone_loads_no_io_framework(module: str) -> None:
    code = f"import sys, {module}; print(','.join(m for m in {sorted(HEAVY)!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"{module} pulled in {out}"


@pytest.mark.integration
def test_importing_every_module_connects_to_nothing() -> None:
    # No module-level app or client: with nothing listening anywhere, every import still returns at once.
    code = f"import {', '.join(_all_stream_modules())}; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
