"""A toy claims model that reports its decisions, the officers' actions and the real outcomes to trustgap.

    trustgap up                                   # embedded broker + Redis (or point at your own Kafka)
    python examples/model_service.py              # finds the embedded broker, or set TRUSTGAP_BROKER_URL
    trustgap worker & sleep 60; trustgap status   # windows close as event time passes the watermark

Run from the repository root. Event time is compressed: 6 hours of traffic are sent in a second or two.
"""

from __future__ import annotations

import os
import random
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stream.client import Client, DeliveryFailure  # noqa: E402
from stream.embedded import read_stack  # noqa: E402


def broker() -> str:
    """TRUSTGAP_BROKER_URL if set, else the stack `trustgap up` started, else localhost:9092."""
    state = Path(os.environ.get("TRUSTGAP_STATE_DIR", ".trustgap"))
    url = os.environ.get("TRUSTGAP_BROKER_URL") or (read_stack(state) or {}).get("broker_url")
    return (url or "localhost:9092").split("://", 1)[-1].replace(";", ",")


def score(features: dict[str, float]) -> float:
    """The 'model': a logistic-ish score from two features."""
    return min(1.0, max(0.0, 0.2 + 0.6 * features["amount"] / 10_000 + 0.2 * features["prior_claims"] / 5))


def main() -> None:
    rng = random.Random(1)
    lost: list[DeliveryFailure] = []
    start = datetime.now(timezone.utc) - timedelta(hours=6)
    with Client(broker(), on_delivery_error=lost.append) as tg:
        tg.annotate("claims", "deploy", "claims model v3 rolled out", start=start)
        for i in range(2000):
            t = start + timedelta(seconds=i * 10.8)
            features = {"amount": rng.uniform(100, 10_000), "prior_claims": float(rng.randint(0, 5))}
            s = score(features)
            label = "review" if s >= 0.5 else "approve"
            pid = f"claim-{i}"
            tg.log_prediction(pid, model="claims", model_version="v3", label=label, score=s,
                              segment={"region": rng.choice(["eu", "us"])}, features=features, ts=t)
            overridden = rng.random() < 0.12
            final = ("approve" if label == "review" else "review") if overridden else label
            tg.log_action(pid, "override" if overridden else "accept", final_label=final, actor="officer-7",
                          ts=t + timedelta(minutes=3))
            tg.log_outcome(pid, final if rng.random() < 0.9 else label, ts=t + timedelta(minutes=20))
    print(f"sent {tg.stats.delivered} events in {tg.stats.messages} messages; {tg.stats.failed} lost")
    sys.exit(1 if lost else 0)


if __name__ == "__main__":
    main()
