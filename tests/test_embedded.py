"""The embedded stack really serves Kafka and Redis on loopback, and up/down manage exactly their own processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from stream.embedded import StackInfo, down, read_stack, up

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parent.parent


def _running(pid: int) -> bool:
    """True if pid exists and is not a zombie (a killed child we have not reaped yet holds no port)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_broker_creates_topic_and_round_trips_messages_through_a_consumer_group(tansu_stack: StackInfo) -> None:
    stack = tansu_stack
    topic = f"embedded-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": stack.bootstrap_servers})
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(timeout=10)

    metadata = admin.list_topics(timeout=10)
    assert len(metadata.topics[topic].partitions) == 3
    # Clients must be sent back to loopback, not to Tansu's default advertised localhost:9092.
    assert [(b.host, b.port) for b in metadata.brokers.values()] == [("127.0.0.1", stack.broker_port)]

    sent = {f"k{i}".encode(): f"v{i}".encode() for i in range(5)}
    producer = Producer({"bootstrap.servers": stack.bootstrap_servers})
    for k, v in sent.items():
        producer.produce(topic, key=k, value=v)
    assert producer.flush(10) == 0

    # Tansu holds a JoinGroup for session.timeout.ms / 2 before answering, so a short session keeps this ~3 s.
    consumer = Consumer(
        {
            "bootstrap.servers": stack.bootstrap_servers,
            "group.id": f"g-{topic}",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([topic])
    received: dict[bytes, bytes] = {}
    deadline = time.monotonic() + 30
    try:
        while len(received) < len(sent) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            key, value = msg.key(), msg.value()
            assert key is not None and value is not None
            assert key not in received, "duplicate delivery"
            received[key] = value
        # Nothing beyond what was produced may arrive.
        assert consumer.poll(1.0) is None
    finally:
        consumer.close()
    assert received == sent


def test_redis_answers_and_starts_empty(redis_client: redis.Redis) -> None:
    assert redis_client.ping() is True
    assert redis_client.dbsize() == 0
    redis_client.set("trustgap:probe", "1", ex=60)
    assert redis_client.get("trustgap:probe") == b"1"


def test_up_is_idempotent_outlives_its_caller_and_down_stops_exactly_its_processes(
    tmp_path: Path, stack: StackInfo
) -> None:
    state_dir = tmp_path / "state"
    # First `up` from a separate interpreter that then exits, as `trustgap demo` would.
    subprocess.run(
        [sys.executable, "-c",
         f"from pathlib import Path; from stream.embedded import up; up(Path({str(state_dir)!r}))"],
        cwd=REPO_ROOT,
        check=True,
        timeout=60,
    )
    first = read_stack(state_dir)
    assert first is not None
    pids = (first["broker_pid"], first["redis_pid"])
    assert all(_running(pid) for pid in pids), "stack must survive the process that started it"
    assert json.loads((state_dir / "stack.json").read_text()) == first

    second = up(state_dir)  # finds the running stack: starts nothing
    assert second == first
    client = redis.Redis.from_url(second["redis_url"])
    assert client.ping() is True
    client.close()

    try:
        assert down(state_dir) is True
        assert not any(_running(pid) for pid in pids)
        assert read_stack(state_dir) is None
        # The session stack is someone else's and must be untouched.
        assert stack.broker_proc.poll() is None and stack.redis_proc.poll() is None
        assert down(state_dir) is False
    finally:
        down(state_dir)


# `up` leaves the stack running on purpose (`trustgap up` returns while it runs), so the Popen handles it made are
# dropped with their processes alive, which Python reports as a ResourceWarning; `down` stops them.
@pytest.mark.filterwarnings(r"ignore:subprocess \d+ is still running:ResourceWarning")
def test_a_new_stack_starts_with_an_empty_redis_like_its_memory_broker(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    try:
        first = up(state_dir)
        client = redis.Redis.from_url(first["redis_url"])
        client.set("left-over", "1")
        client.bgrewriteaof()  # on disk now, as the last second of a demo would be
        client.close()
        down(state_dir)
        second = up(state_dir)
        client = redis.Redis.from_url(second["redis_url"])
        assert client.dbsize() == 0
        client.close()
    finally:
        down(state_dir)


def test_down_never_kills_a_recycled_pid(tmp_path: Path) -> None:
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        # A stale stack.json whose pids now belong to an unrelated process.
        (tmp_path / "stack.json").write_text(
            json.dumps(
                {
                    "broker_url": "kafka://127.0.0.1:1",
                    "redis_url": "redis://127.0.0.1:2/0",
                    "broker_pid": bystander.pid,
                    "redis_pid": bystander.pid,
                    "started_at": "2020-01-01T00:00:00+00:00",
                }
            )
        )
        assert down(tmp_path) is False
        assert bystander.poll() is None
        assert read_stack(tmp_path) is None
    finally:
        bystander.kill()
        bystander.wait()
