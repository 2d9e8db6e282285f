"""The fast lane starts no process: outside `integration` tests, every way of starting one raises.

The rule is what a test does, not what it is called: a test that starts a broker, a redis-server, a worker, a
Python child (mypy, ruff, `python -c`), promtool, amtool or chromium is an integration test. Checking the act
itself (every child process goes through one of the calls below) catches the indirect cases too — a fixture, a
helper or the code under test that spawns — which a scan of test source for `subprocess` would miss.

Collection (importing the test modules) is not guarded: importing Faust runs one `file -b` on the interpreter
(croniter's 32-bit probe), which is an import's cost, not a test's.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from typing import Any, NoReturn

import pytest

# Fixtures that stand for the session's real broker and Redis: a test that asks for one is an integration test
# even when another test already started the processes behind it.
INTEGRATION_FIXTURES = frozenset({"stack", "tansu_stack", "redis_client", "deploy", "deploy_tansu", "cluster",
                                  "deploy_cluster"})

# subprocess (and asyncio's subprocesses, which use it) starts every child in Popen._execute_child; os.fork also
# covers multiprocessing; the rest are the direct os calls.
_SPAWNERS: tuple[tuple[Any, str], ...] = (
    (subprocess.Popen, "_execute_child"),
    (os, "fork"),
    (os, "forkpty"),
    (os, "posix_spawn"),
    (os, "posix_spawnp"),
    (os, "system"),
)


class ProcessInFastLane(AssertionError):
    """A test not marked `integration` tried to start a process."""


def is_integration(item: pytest.Item) -> bool:
    return item.get_closest_marker("integration") is not None


def check_fixtures(item: pytest.Item) -> None:
    """Fail `item` when it is not marked integration yet uses the real stack's fixtures."""
    used = sorted(INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())))
    if used and not is_integration(item):
        pytest.fail(f"{item.nodeid} uses {', '.join(used)} (the real broker and Redis) but is not marked "
                    "integration", pytrace=False)


@contextlib.contextmanager
def forbidden(item: pytest.Item) -> Iterator[None]:
    """While `item` runs (setup, call, teardown), starting a process raises unless it is an integration test."""
    if is_integration(item):
        yield
        return

    def refuse(*_args: Any, **_kwargs: Any) -> NoReturn:
        raise ProcessInFastLane(f"{item.nodeid} started a process but is not marked integration: mark it "
                                "`pytest.mark.integration`, or test the logic without the process")

    with pytest.MonkeyPatch.context() as mp:
        for owner, name in _SPAWNERS:
            if hasattr(owner, name):
                mp.setattr(owner, name, refuse)
        yield
