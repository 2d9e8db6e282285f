"""The real Apache Kafka broker (stream/embedded_kafka.py) starts from the jars `make kafka` fetched and serves both
clients trustgap uses: confluent-kafka (the SDK, the tests' tools) and aiokafka (Faust's). Its log survives a clean
stop and a SIGKILL, and it reports a topic's end exactly (the high watermark is the count of messages produced).

Every count is exact against what the producer's delivery reports acknowledged; every wait polls for the asserted
condition itself, with a deadline.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition as AioTopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic as AioNewTopic
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from stream.embedded import free_port
from stream.embedded_kafka import KafkaInfo, kill_kafka, running_kafka, start_kafka, stop_kafka

pytestmark = pytest.mark.integration

# (partition, offset, key, value) of one acknowledged message.
Record = tuple[int, int, bytes, bytes]

DEADLINE_S = 60.0


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaInfo]:
    """One broker for the tests that need no restart; each of them uses its own topics and groups."""
    with running_kafka(tmp_path_factory.mktemp("kafka")) as info:
        yield info


def new_topic(bootstrap: str, partitions: int) -> str:
    topic = f"t-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(timeout=30)
    return topic


def produce(bootstrap: str, topic: str, count: int, batches: int = 1, start: int = 0) -> list[Record]:
    """Send `count` keyed messages (acks=all) in `batches` flushes; return what the broker acknowledged."""
    acked: list[Record] = []
    failed: list[KafkaError] = []

    def report(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            failed.append(err)
        else:
            acked.append((msg.partition(), msg.offset(), msg.key(), msg.value()))

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                        "linger.ms": 5})
    per_batch = -(-count // batches)
    for first in range(start, start + count, per_batch):
        for i in range(first, min(first + per_batch, start + count)):
            producer.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), on_delivery=report)
        assert producer.flush(30) == 0
    assert failed == []
    assert len(acked) == count
    return sorted(acked)


def per_partition(records: list[Record]) -> Counter[int]:
    return Counter(p for p, _, _, _ in records)


def high_watermarks(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"wm-{uuid.uuid4().hex[:8]}"})
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
                for p in range(partitions)}
    finally:
        consumer.close()


def read_all(bootstrap: str, topic: str, partitions: int) -> list[Record]:
    """Read every partition from its start to its high watermark, without a group (nothing is committed)."""
    ends = high_watermarks(bootstrap, topic, partitions)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    records: list[Record] = []
    deadline = time.monotonic() + DEADLINE_S
    try:
        while per_partition(records) != Counter(ends):  # a missing partition counts as zero
            assert time.monotonic() < deadline, f"read {per_partition(records)} of {ends}"
            msg = consumer.poll(0.5)
            if msg is not None:
                assert msg.error() is None, msg.error()
                records.append((msg.partition(), msg.offset(), msg.key(), msg.value()))
    finally:
        consumer.close()
    return sorted(records)


# --- one broker, both clients ----------------------------------------------------------------------------------

def test_the_broker_starts_from_the_cache_and_a_consumer_group_reads_exactly_what_was_produced(
        kafka: KafkaInfo) -> None:
    topic = new_topic(kafka.bootstrap_servers, partitions=4)
    metadata = AdminClient({"bootstrap.servers": kafka.bootstrap_servers}).list_topics(timeout=10)
    assert [(b.host, b.port) for b in metadata.brokers.values()] == [("127.0.0.1", kafka.port)]
    assert len(metadata.topics[topic].partitions) == 4

    sent = produce(kafka.bootstrap_servers, topic, 1000)
    assert len(per_partition(sent)) == 4  # keys spread over every partition

    consumer = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": f"g-{topic}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    received: list[Record] = []
    deadline = time.monotonic() + DEADLINE_S
    try:
        while len(received) < len(sent):
            assert time.monotonic() < deadline, f"received {len(received)} of {len(sent)}"
            msg = consumer.poll(0.5)
            if msg is not None:
                assert msg.error() is None, msg.error()
                received.append((msg.partition(), msg.offset(), msg.key(), msg.value()))
        consumer.commit(asynchronous=False)
        committed = consumer.committed([TopicPartition(topic, p) for p in range(4)], timeout=10)
    finally:
        consumer.close()
    assert sorted(received) == sent
    assert {tp.partition: tp.offset for tp in committed} == dict(per_partition(sent))


def test_the_high_watermark_is_the_number_of_messages_produced(kafka: KafkaInfo) -> None:
    # Uneven flushes make many record batches of different sizes: a broker that reports the end of a partition
    # one batch short (as Tansu did) fails here.
    topic = new_topic(kafka.bootstrap_servers, partitions=4)
    sent = produce(kafka.bootstrap_servers, topic, 1000, batches=7)
    expected = {p: per_partition(sent)[p] for p in range(4)}
    assert high_watermarks(kafka.bootstrap_servers, topic, 4) == expected
    assert sum(expected.values()) == 1000

    # ListOffsets through the admin API says the same.
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    latest = admin.list_offsets({TopicPartition(topic, p): OffsetSpec.latest() for p in range(4)})
    assert {tp.partition: f.result().offset for tp, f in latest.items()} == expected


def test_aiokafka_joins_a_group_commits_and_shares_the_partitions_after_a_rebalance(kafka: KafkaInfo) -> None:
    bootstrap = kafka.bootstrap_servers
    topic, group = f"aio-{uuid.uuid4().hex[:10]}", f"g-aio-{uuid.uuid4().hex[:8]}"

    async def wait_until_split(first: AIOKafkaConsumer, second: AIOKafkaConsumer) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while not (len(first.assignment()) == 1 and len(second.assignment()) == 1):
            assert time.monotonic() < deadline, f"assignments {first.assignment()} and {second.assignment()}"
            # Polling keeps both members taking part in the rebalance.
            for member in (first, second):
                assert await member.getmany(timeout_ms=100) == {}

    async def consume(members: list[AIOKafkaConsumer], count: int) -> list[list[tuple[int, int, bytes]]]:
        """(partition, offset, value) of what each member received, once `count` arrived in all."""
        got: list[list[tuple[int, int, bytes]]] = [[] for _ in members]
        deadline = time.monotonic() + DEADLINE_S
        while sum(map(len, got)) < count:
            assert time.monotonic() < deadline, f"consumed {sum(map(len, got))} of {count}"
            for mine, member in zip(got, members, strict=True):
                for tp, msgs in (await member.getmany(timeout_ms=200)).items():
                    mine += [(tp.partition, m.offset, m.value or b"") for m in msgs]
        return got

    async def main() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        first = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                 auto_offset_reset="earliest", heartbeat_interval_ms=300)
        second = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                  auto_offset_reset="earliest", heartbeat_interval_ms=300)
        try:
            await admin.create_topics([AioNewTopic(topic, num_partitions=2, replication_factor=1)])
            (described,) = await admin.describe_topics([topic])
            assert len(described["partitions"]) == 2
            before = produce(bootstrap, topic, 200)
            await first.start()
            (got,) = await consume([first], 200)
            assert sorted(got) == [(p, o, v) for p, o, _, v in before]
            await first.commit()
            ends = dict(per_partition(before))
            committed = await admin.list_consumer_group_offsets(group)
            assert {tp.partition: meta.offset for tp, meta in committed.items()} == ends

            await second.start()
            await wait_until_split(first, second)
            # Both resume from the commits: only what is produced now arrives, each message once, and the new
            # member reads its own partition.
            after = produce(bootstrap, topic, 100, start=200)
            got_first, got_second = await consume([first, second], 100)
            assert sorted(got_first + got_second) == [(p, o, v) for p, o, _, v in after]
            (own,) = second.assignment()
            assert {p for p, _, _ in got_second} == {own.partition}
            assert {p for p, _, _ in got_first} == {tp.partition for tp in first.assignment()} - {own.partition}
            assert await second.position(AioTopicPartition(topic, own.partition)) == ends[own.partition] + len(
                got_second)
        finally:
            await second.stop()
            await first.stop()
            await admin.close()

    asyncio.run(main())


# --- restarts on the same log ----------------------------------------------------------------------------------

@pytest.mark.parametrize("crash", [False, True], ids=["clean-stop", "sigkill"])
def test_a_restarted_broker_keeps_every_acknowledged_message_at_its_offset(tmp_path: Path, crash: bool) -> None:
    workdir, log_path = tmp_path / "kafka", tmp_path / "kafka" / "kafka.log"
    port, controller_port = free_port(), free_port()
    bootstrap = f"127.0.0.1:{port}"
    proc = start_kafka(workdir, port, controller_port, log_path)
    try:
        topic = new_topic(bootstrap, partitions=3)
        sent = produce(bootstrap, topic, 600, batches=4)  # acks=all, every delivery report in
        if crash:
            kill_kafka(proc)
        else:
            stop_kafka(proc)
        assert proc.returncode is not None
        proc = start_kafka(workdir, port, controller_port, log_path)

        assert read_all(bootstrap, topic, 3) == sent
        ends = {p: per_partition(sent)[p] for p in range(3)}
        assert high_watermarks(bootstrap, topic, 3) == ends
        # The log goes on where it stopped: nothing acknowledged is overwritten by what comes next.
        more = produce(bootstrap, topic, 30, start=600)
        assert {p: min(o for q, o, _, _ in more if q == p) for p, _, _, _ in more} == {
            p: ends[p] for p, _, _, _ in more}
        assert read_all(bootstrap, topic, 3) == sorted(sent + more)
    finally:
        stop_kafka(proc)
