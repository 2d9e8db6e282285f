"""Before/after on one stack: the worker of two source trees, alternately, on the same data.

`python -m bench.ab OLD_TREE NEW_TREE [--rounds N]` (e.g. `git worktree add /tmp/old <commit>` for OLD_TREE)
starts one embedded stack (Apache Kafka; Tansu with `--broker tansu`), fills a single-event and a batched topic
once, then runs `python -m stream.cli worker` from each tree in turn (cwd = the tree, so its `stream` package is the
one imported) and prints events/s, Redis round trips per 1,000 events and peak RSS for each. Alternating runs share
the machine's noise, so the ratio between the trees is steadier than either figure.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

from bench.data import encode_batched, encode_single, predictions
from bench.topics import BATCH, create_topic, produce
from bench.workers import worker_run
from stream.embedded import running_stack


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.splitlines()[0])
    ap.add_argument("trees", nargs=2, type=Path, help="two source trees (a checkout each)")
    ap.add_argument("--broker", choices=("kafka", "tansu"), default="kafka", help="Apache Kafka (default) or Tansu")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--single", type=int, default=40_000, help="single-event messages")
    ap.add_argument("--batched", type=int, default=400_000, help=f"events in messages of {BATCH}")
    args = ap.parse_args(argv)
    here = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="trustgap-ab-") as tmp, running_stack(Path(tmp) / "stack",
                                                                                    broker=args.broker) as stack:
        single_t, batched_t = f"ab-single-{uuid.uuid4().hex[:6]}", f"ab-batched-{uuid.uuid4().hex[:6]}"
        create_topic(stack, single_t)
        create_topic(stack, batched_t)
        single = encode_single(predictions(args.single, seed=2))
        batched = encode_batched(predictions(args.batched, seed=3), BATCH)
        produce(stack, single_t, single)
        produce(stack, batched_t, batched)
        for r in range(args.rounds):
            for tree in args.trees:
                os.chdir(tree)
                try:
                    s = worker_run(stack, Path(tmp), single_t, len(single), 1)
                    b = worker_run(stack, Path(tmp), batched_t, len(batched), BATCH)
                finally:
                    os.chdir(here)
                print(f"round {r + 1} {tree}: single-event {s.rate:,.0f} ev/s, {s.trips_per_1000:.2f} trips/1000, "
                      f"RSS {s.peak_rss_mib:.0f} MiB | batched {b.rate:,.0f} ev/s, {b.trips_per_1000:.2f} "
                      f"trips/1000, RSS {b.peak_rss_mib:.0f} MiB", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
