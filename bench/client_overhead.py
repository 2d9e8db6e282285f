"""Send overhead of the producer SDK per event, on this machine, against a real (embedded Tansu) broker.

    python bench/client_overhead.py [--events 100000]

Times the calls a model service makes (validation, encoding, batching, handing messages to librdkafka) and,
separately, the time until the broker acknowledged everything (`close()`).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stream.client import AsyncClient, Client  # noqa: E402
from stream.embedded import running_stack  # noqa: E402


def run_sync(bootstrap: str, n: int, kind: str, validate: bool) -> tuple[float, float]:
    ts = datetime.now(timezone.utc)
    with Client(bootstrap, validate_events=validate) as tg:
        started = time.perf_counter()
        if kind == "prediction":
            for i in range(n):
                tg.log_prediction(f"p{i}", model="claims", model_version="v3", label="approve", score=0.91,
                                  segment={"region": "eu", "channel": "web"}, ts=ts)
        else:
            for i in range(n):
                tg.log_action(f"p{i}", "override", ts=ts)
        calls = time.perf_counter() - started
    total = time.perf_counter() - started
    assert tg.stats.delivered == n and tg.stats.failed == 0, tg.stats
    return calls / n * 1e6, total / n * 1e6


def run_async(bootstrap: str, n: int) -> tuple[float, float]:
    async def go() -> tuple[float, float]:
        async with AsyncClient(bootstrap) as tg:
            started = time.perf_counter()
            for i in range(n):
                await tg.log_prediction(f"p{i}", model="claims", model_version="v3", label="approve", score=0.91)
            calls = time.perf_counter() - started
        return calls / n * 1e6, (time.perf_counter() - started) / n * 1e6
    return asyncio.run(go())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    args = ap.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()}, {args.events} events per case")
    with running_stack(Path(tempfile.mkdtemp(prefix="tg-bench-"))) as stack:
        bs = stack.bootstrap_servers
        run_sync(bs, 2000, "prediction", True)  # warm up: topics auto-created, metadata cached
        cases = [("log_prediction (validated)", lambda: run_sync(bs, args.events, "prediction", True)),
                 ("log_prediction (validate_events=False)", lambda: run_sync(bs, args.events, "prediction", False)),
                 ("log_action (validated)", lambda: run_sync(bs, args.events, "action", True)),
                 ("AsyncClient.log_prediction (validated)", lambda: run_async(bs, args.events))]
        for name, case in cases:
            per_call, per_event_acked = case()
            print(f"{name:42s} {per_call:6.1f} µs per call   {per_event_acked:6.1f} µs per event until acked")


if __name__ == "__main__":
    main()
