"""The Apache Kafka pin and the broker's configuration, read without starting anything: one version in
deploy/kafka/pom.xml, and a server.properties for one loopback node. tests/test_apache_kafka.py runs the broker.

docker-compose.yaml, the Makefile and the README cannot read the pom, so each is checked against it here."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
import yaml

from stream.embedded_kafka import (
    CACHE,
    FETCHED_STAMP,
    POM,
    REPO,
    format_command,
    kafka_libs,
    kafka_version,
    log4j_config,
    new_cluster_id,
    server_properties,
)
from stream.errors import EmbeddedError


def test_compose_runs_the_apache_kafka_version_the_pom_pins() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{kafka_version()}"


def test_the_readme_names_the_pinned_version() -> None:
    readme = (REPO / "README.md").read_text()
    assert f"Apache Kafka broker, {kafka_version()}," in readme
    assert f"`.trustgap/kafka/{kafka_version()}/libs`" in readme


def test_the_pin_is_the_poms_kafka_version_property(tmp_path: Path) -> None:
    # The agreement test above could not fail if the reader returned anything but the property.
    pom = tmp_path / "pom.xml"
    pom.write_text(POM.read_text().replace(f"<kafka.version>{kafka_version()}</kafka.version>",
                                           "<kafka.version>9.9.9</kafka.version>"))
    assert kafka_version(pom) == "9.9.9"
    assert re.fullmatch(r"\d+\.\d+\.\d+", kafka_version())


def test_the_makefile_copies_the_jars_where_python_looks_for_them() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert f"KAFKA_POM := {POM.relative_to(REPO)}\n" in makefile
    assert f"KAFKA_CACHE := {CACHE.relative_to(REPO)}/$(KAFKA_VERSION)\n" in makefile
    assert f"KAFKA_STAMP := $(KAFKA_CACHE)/{FETCHED_STAMP}\n" in makefile
    # Both `make test` and `make bench` fetch the broker first.
    assert re.search(r"^test: .*\$\(KAFKA_STAMP\)", makefile, re.MULTILINE)
    assert re.search(r"^bench: .*\$\(KAFKA_STAMP\)", makefile, re.MULTILINE)


def test_a_missing_cache_tells_the_operator_to_run_make_kafka(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedError, match=r"Apache Kafka 4\.4\.0 is not in .*Operator action: run `make kafka`"):
        kafka_libs("4.4.0", cache=tmp_path)
    # Jars without the stamp are a copy that did not finish.
    (tmp_path / "4.4.0" / "libs").mkdir(parents=True)
    (tmp_path / "4.4.0" / "libs" / "kafka_2.13-4.4.0.jar").touch()
    with pytest.raises(EmbeddedError, match="make kafka"):
        kafka_libs("4.4.0", cache=tmp_path)
    (tmp_path / "4.4.0" / FETCHED_STAMP).touch()
    assert kafka_libs("4.4.0", cache=tmp_path) == tmp_path / "4.4.0" / "libs"


def test_the_broker_is_one_loopback_node_that_is_its_own_controller(tmp_path: Path) -> None:
    props = server_properties(tmp_path, 19092, 19093)
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.quorum.voters"] == f"{props['node.id']}@127.0.0.1:19093"
    assert props["log.dirs"] == str(tmp_path / "data")
    # One broker cannot hold more replicas of the internal topics than one.
    assert props["offsets.topic.replication.factor"] == props["transaction.state.log.replication.factor"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    # The session a restarted controller waits out must still span several heartbeats.
    assert int(props["broker.session.timeout.ms"]) >= 4 * int(props["broker.heartbeat.interval.ms"])


def test_extra_properties_override_the_defaults(tmp_path: Path) -> None:
    props = server_properties(tmp_path, 1, 2, {"num.partitions": "3", "log.retention.ms": "-1"})
    assert (props["num.partitions"], props["log.retention.ms"]) == ("3", "-1")


def test_the_broker_logs_to_the_file_it_is_given(tmp_path: Path) -> None:
    config = log4j_config(tmp_path / "kafka.log")
    assert f"appender.file.fileName = {tmp_path / 'kafka.log'}\n" in config
    assert "shutdownHook = disable" in config


def test_cluster_ids_are_kafka_uuids() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cid in ids:
        assert len(cid) == 22 and not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


def test_scram_credentials_are_added_when_the_storage_is_formatted(tmp_path: Path) -> None:
    config = tmp_path / "server.properties"
    plain = format_command(config, "cid")
    assert plain == ["kafka.tools.StorageTool", "format", "--cluster-id", "cid", "--config", str(config)]
    # Users added at format time exist from the broker's first start, before any admin client could create them.
    specs = ["SCRAM-SHA-512=[name=alice,password=a-1]", "SCRAM-SHA-256=[name=bob,password=b-2]"]
    assert format_command(config, "cid", specs) == [*plain, "--add-scram", specs[0], "--add-scram", specs[1]]
