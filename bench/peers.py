"""What the worker is measured beside, each timed from the first event it sees to the last of a topic filled before
it started (start-up and the group join excluded): the raw aiokafka consumer in this process, and the bare Faust
agent (bench/faust_count.py) and Quix Streams (bench/quix_count.py) in processes of their own.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson

from bench.topics import PARTITIONS
from stream.embedded import StackInfo

REPO = Path(__file__).resolve().parents[1]
# Quix Streams pins pydantic, pydantic-settings and confluent-kafka below the versions trustgap runs with, so it has
# a venv of its own (the Makefile's BENCH_VENV, from pyproject's `bench` extra): installing it never changes what
# the worker and the tests run on.
QUIX_PYTHON = REPO / ".trustgap" / "bench-venv" / "bin" / "python"
PEER_TIMEOUT_S = 600


class PeerFailed(RuntimeError):
    """A peer's process exited without its figure; the message says why (the end of its log)."""


async def raw_consumer(stack: StackInfo, topic: str, expect: int, decode: str) -> float:
    """aiokafka `getmany` over every partition (no group, no commit): events/s with no decode/orjson/pydantic."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from stream.events import parse

    consumer = AIOKafkaConsumer(bootstrap_servers=stack.bootstrap_servers, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        await consumer.seek_to_beginning()
        n, first, first_n, last = 0, 0.0, 0, 0.0
        while n < expect:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            k = 0
            for msgs in batches.values():
                for m in msgs:
                    if decode == "none":
                        k += 1
                    elif decode == "orjson":
                        doc = orjson.loads(m.value)
                        k += len(doc) if isinstance(doc, list) else 1
                    else:
                        k += len(parse("prediction", m.value)[0])
            if k:
                now = time.perf_counter()
                if not first:
                    first, first_n = now, k
                n, last = n + k, now
        return (n - first_n) / (last - first)
    finally:
        await consumer.stop()



def faust_counter(stack: StackInfo, topic: str, expect: int, mode: str, loop: str, logdir: Path,
                  gc_threshold: int = 0) -> float:
    """The bare Faust counting agent in its own process, like a worker (gc_threshold 0: CPython's defaults)."""
    group = f"bench-faust-{uuid.uuid4().hex[:8]}"
    return _counted(group, [sys.executable, "-m", "bench.faust_count", stack.broker_url, topic, group, str(expect),
                            mode, loop, str(gc_threshold), str(logdir / f"{group}-data")], logdir)


def quix_missing() -> str | None:
    """Why Quix Streams cannot run here, or None when its venv is in place."""
    if QUIX_PYTHON.exists():
        return None
    return (f"Quix Streams is not installed in {QUIX_PYTHON.parent.parent.relative_to(REPO)}. Operator action: run "
            "`make bench` (or `make .trustgap/bench-venv/.installed`), which installs pyproject's `bench` extra there.")


def quix_counter(stack: StackInfo, topic: str, expect: int, mode: str, shape: str, logdir: Path) -> float:
    """Quix Streams counting (`mode` count or window, `shape` single or batched messages) in its own process."""
    group = f"bench-quix-{uuid.uuid4().hex[:8]}"
    return _counted(group, [str(QUIX_PYTHON), "-m", "bench.quix_count", stack.bootstrap_servers, topic, group,
                            str(expect), mode, shape, str(logdir / f"{group}-state")], logdir)


def _counted(group: str, argv: list[str], logdir: Path) -> float:
    """Run a counting process (cwd: the repo, so `-m bench...` resolves) and return events/s over its span."""
    log_path = logdir / f"{group}.log"
    with log_path.open("wb") as log:
        out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=log, cwd=REPO, timeout=PEER_TIMEOUT_S)
    # Faust may write terminal control codes to stdout too; the figure is the one JSON line.
    lines = [line[line.index(b"{"):] for line in out.stdout.splitlines() if b"{" in line]
    if not lines:
        tail = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()][-1:]
        raise PeerFailed(f"{argv[2]} exited {out.returncode} without a figure; its log ends: {' '.join(tail)[:300]}")
    r = orjson.loads(lines[-1])
    return float((r["n"] - r["first_n"]) / (r["last"] - r["first"]))
