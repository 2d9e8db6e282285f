"""The bench's topics: created and filled the same way on either broker (Apache Kafka or Tansu)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stream.embedded import StackInfo

PARTITIONS = 4
BATCH = 500            # events per JSON-array message in the batched runs


def create_topic(stack: StackInfo, name: str, partitions: int = PARTITIONS) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": stack.bootstrap_servers})
    for fut in admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)]).values():
        fut.result(30)


def produce(stack: StackInfo, topic: str, messages: Sequence[tuple[bytes, bytes]]) -> list[int]:
    """Produce keyed messages; returns how many landed on each partition (the worker's offsets must reach it)."""
    from confluent_kafka import Producer

    per_partition = [0] * PARTITIONS
    failed = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            failed.append(err)
        else:
            per_partition[msg.partition()] += 1

    producer = Producer({"bootstrap.servers": stack.bootstrap_servers, "linger.ms": 10, "batch.size": 1 << 20,
                         "message.max.bytes": 4 << 20, "queue.buffering.max.kbytes": 1 << 20})
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120) or failed:
        raise RuntimeError(f"{topic}: messages not delivered ({failed[:1]})")
    return per_partition


def produce_to_partitions(stack: StackInfo, topic: str, messages: Sequence[tuple[bytes, bytes]]) -> int:
    """Produce message i to partition i mod PARTITIONS; returns how many were sent."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": stack.bootstrap_servers, "message.max.bytes": 4 << 20})
    for i, (key, value) in enumerate(messages):
        producer.produce(topic, value=value, key=key, partition=i % PARTITIONS)
    producer.flush(30)
    return len(messages)
