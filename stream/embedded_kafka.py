"""Start and stop a real Apache Kafka broker for the tests and the bench: one KRaft node, broker and controller in
one JVM, bound to 127.0.0.1 only, run from the jars `make kafka` copied from Maven Central.

deploy/kafka/pom.xml pins the version (`kafka.version`); this module reads it there and finds the jars in
.trustgap/kafka/<version>/libs, where the Makefile put them. The log directory is formatted once, so a broker
restarted on the same workdir (after a clean stop or a SIGKILL) serves the log it wrote before. Like
stream/embedded.py, each JVM gets its own session, so one `killpg` stops it.

Errors: `stream.errors.EmbeddedError` when Java or the jars are missing (the message says which `make` target to
run), when formatting fails, or when the broker exits or does not serve in time (the message ends with its log).
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .embedded import free_port, stop
from .errors import EmbeddedError

REPO = Path(__file__).resolve().parents[1]
POM = REPO / "deploy" / "kafka" / "pom.xml"
# The Makefile's KAFKA_CACHE and KAFKA_STAMP name the same paths; `make clean` removes .trustgap with them.
CACHE = REPO / ".trustgap" / "kafka"
FETCHED_STAMP = ".fetched"

# A cold JVM loads the broker, elects itself controller and unfences itself in 5-10 s on 2 idle cores; a restart
# after SIGKILL adds a broker session timeout, and a busy machine (workers, Redis, Prometheus) doubles all of it.
STARTUP_TIMEOUT_S = 120.0
# A controlled shutdown takes ~2 s; past this the broker is killed, which a restart recovers from anyway.
STOP_TIMEOUT_S = 30.0
FORMAT_TIMEOUT_S = 120.0
# Enough for test and bench loads; modest because the suite also runs Redis, workers and Prometheus on 2 cores.
JVM_OPTIONS = ("-Xms256m", "-Xmx512m", "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true")
LOG_TAIL_LINES = 40

_POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


@dataclass(frozen=True)
class KafkaInfo:
    """A running broker owned by the caller."""

    port: int
    controller_port: int
    proc: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path

    @property
    def bootstrap_servers(self) -> str:
        """The broker address in the form confluent_kafka and aiokafka expect."""
        return f"127.0.0.1:{self.port}"

    @property
    def broker_url(self) -> str:
        """The broker address in the form trustgap's settings expect."""
        return f"kafka://127.0.0.1:{self.port}"


def kafka_version(pom: Path = POM) -> str:
    """Return the Apache Kafka version deploy/kafka/pom.xml pins (its `kafka.version` property)."""
    try:
        root = ET.parse(pom).getroot()
    except (OSError, ET.ParseError) as exc:
        raise EmbeddedError(f"cannot read the Kafka pin from {pom}: {exc}. The Apache Kafka broker runs from a "
                            "source checkout only.") from exc
    version = root.findtext("m:properties/m:kafka.version", namespaces=_POM_NS)
    if not version or not version.strip():
        raise EmbeddedError(f"{pom} has no <kafka.version> property")
    return version.strip()


def kafka_libs(version: str | None = None, cache: Path = CACHE) -> Path:
    """Return the directory holding the broker's jars for version (default: the pinned one)."""
    version = version or kafka_version()
    home = cache / version
    libs = home / "libs"
    if not (home / FETCHED_STAMP).exists() or not (libs / f"kafka_2.13-{version}.jar").exists():
        raise EmbeddedError(f"Apache Kafka {version} is not in {libs}. Operator action: run `make kafka` (it "
                            "copies the broker's jars from Maven Central with mvn, installing Java and Maven with "
                            "apt-get when absent).")
    return libs


def java_binary() -> str:
    """Return the path of `java` (Kafka 4 needs Java 17 or newer)."""
    java = shutil.which("java")
    if java is None:
        raise EmbeddedError("java is not on PATH, and the Apache Kafka broker is a JVM. Operator action: run "
                            "`make kafka` (it installs default-jre-headless with apt-get when java is absent).")
    return java


def server_properties(workdir: Path, port: int, controller_port: int,
                      extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the broker's server.properties: one node, broker and controller, everything on 127.0.0.1."""
    props = {
        "node.id": "1",
        "process.roles": "broker,controller",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "log.dirs": str(workdir / "data"),
        # One broker: the internal topics cannot have more replicas than that.
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        # Consumer groups form at once instead of waiting for members that will not come.
        "group.initial.rebalance.delay.ms": "0",
        "num.partitions": "1",
        # Kafka's default, which docker-compose.yaml keeps too: the tests see what a deployment does.
        "auto.create.topics.enable": "true",
        # After a SIGKILL the restarted controller keeps the dead broker's session until it times out before the
        # new one may register (9 s by default); a shorter session with heartbeats as frequent in proportion saves
        # that wait on every restart of the fault tests.
        "broker.heartbeat.interval.ms": "1000",
        "broker.session.timeout.ms": "4500",
    }
    props.update(extra or {})
    return props


def log4j_config(log_path: Path) -> str:
    """Return a log4j 2 configuration that appends the broker's log to log_path."""
    return "\n".join([
        "status = warn",
        # Without this, log4j's own shutdown hook stops logging while Kafka's is still shutting down, and the last
        # lines of a clean stop are lost.
        "shutdownHook = disable",
        "appender.file.type = File",
        "appender.file.name = file",
        f"appender.file.fileName = {log_path}",
        "appender.file.append = true",
        "appender.file.layout.type = PatternLayout",
        "appender.file.layout.pattern = [%d] %p %m (%c)%n",
        "rootLogger.level = info",
        "rootLogger.appenderRef.file.ref = file",
        "",
    ])


def start_kafka(workdir: Path, port: int, controller_port: int, log_path: Path,
                extra_properties: Mapping[str, str] | None = None,
                timeout: float = STARTUP_TIMEOUT_S, scram: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """Start the broker on 127.0.0.1:port, its data in workdir/data (formatted on first use only) and its own log
    appended to log_path, and return once it serves Kafka metadata on that port (a PLAINTEXT listener).

    `scram`: SCRAM credentials to create, each as StorageTool's `--add-scram` takes it
    (`SCRAM-SHA-512=[name=alice,password=...]`). They are written when the storage is formatted, so the users exist
    from the broker's first start (no client has to create them over a listener they secure); they apply to a fresh
    workdir, and a restart keeps the ones it was formatted with."""
    java, libs = java_binary(), kafka_libs()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "server.properties"
    _write_properties(config, server_properties(workdir, port, controller_port, extra_properties))
    log4j = workdir / "log4j2.properties"
    log4j.write_text(log4j_config(log_path))
    argv = [java, *JVM_OPTIONS, f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{libs}/*"]
    if not (workdir / "data" / "meta.properties").exists():
        _format(argv, config, log_path, scram)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        # The child keeps its own copy of the descriptor, so closing ours here is safe.
        proc = subprocess.Popen([*argv, "kafka.Kafka", str(config)], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True)
    try:
        _wait_serving(proc, port, log_path, timeout)
    except BaseException:
        stop_kafka(proc)
        raise
    return proc


def stop_kafka(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> None:
    """Stop the broker cleanly (SIGTERM: a controlled shutdown), killing it if it has not exited within timeout."""
    stop(proc, timeout)


def kill_kafka(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the broker, as a crash would, and reap it; what it acknowledged is in the page cache and survives."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@contextlib.contextmanager
def running_kafka(workdir: Path, extra_properties: Mapping[str, str] | None = None) -> Iterator[KafkaInfo]:
    """Run a broker on free ports with its log under workdir, stopping it on exit."""
    port, controller_port = free_port(), free_port()
    log_path = workdir / "kafka.log"
    proc = start_kafka(workdir, port, controller_port, log_path, extra_properties)
    try:
        yield KafkaInfo(port=port, controller_port=controller_port, proc=proc, workdir=workdir, log_path=log_path)
    finally:
        stop_kafka(proc)


def new_cluster_id() -> str:
    """Return a random cluster id as Kafka writes one: 16 random bytes in unpadded URL-safe base64."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        # Kafka never hands out an id that starts with "-": a command line would read it as an option.
        if not text.startswith("-"):
            return text


def _write_properties(path: Path, props: Mapping[str, str]) -> None:
    """Write props as a Java properties file (a backslash is its escape character)."""
    path.write_text("".join(f"{k}={v.replace(chr(92), chr(92) * 2)}\n" for k, v in props.items()))


def format_command(config: Path, cluster_id: str, scram: Sequence[str] = ()) -> list[str]:
    """Return StorageTool's arguments that format the log directory of config, with SCRAM credentials to add."""
    added = [arg for spec in scram for arg in ("--add-scram", spec)]
    return ["kafka.tools.StorageTool", "format", "--cluster-id", cluster_id, "--config", str(config), *added]


def _format(argv: list[str], config: Path, log_path: Path, scram: Sequence[str] = ()) -> None:
    """Format the log directory for a new single-node cluster, or raise EmbeddedError with the tool's output
    (which never holds the SCRAM passwords: it prints only what it formatted)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        try:
            done = subprocess.run([*argv, *format_command(config, new_cluster_id(), scram)],
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=FORMAT_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise EmbeddedError(f"formatting the Kafka log directory took over {FORMAT_TIMEOUT_S:g} s"
                                f"{_tail(log_path)}") from exc
    if done.returncode != 0:
        raise EmbeddedError(f"formatting the Kafka log directory failed with code {done.returncode}"
                            f"{_tail(log_path)}")


def _wait_serving(proc: subprocess.Popen[bytes], port: int, log_path: Path, timeout: float) -> None:
    """Block until the broker answers a metadata request naming itself, or raise EmbeddedError."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    deadline = time.monotonic() + timeout
    admin = AdminClient({
        "bootstrap.servers": f"127.0.0.1:{port}",
        # Until the JVM listens every connection is refused: librdkafka would log each one as an error, and back
        # off up to 10 s between tries, which would add that much to a start.
        "log_level": 2,
        "reconnect.backoff.max.ms": 500,
    })
    while True:
        _check_deadline(proc, port, log_path, deadline, timeout)
        try:
            # The listener opens only once the broker is unfenced; a metadata round trip proves it serves.
            if admin.list_topics(timeout=min(2.0, max(0.1, deadline - time.monotonic()))).brokers:
                return
        except KafkaException:
            pass
        time.sleep(0.1)


def _check_deadline(proc: subprocess.Popen[bytes], port: int, log_path: Path, deadline: float,
                    timeout: float) -> None:
    """Fail fast when the broker exited (port taken, bad config, old Java), or when the deadline passed."""
    code = proc.poll()
    if code is not None:
        raise EmbeddedError(f"the Kafka broker exited with code {code} during startup{_tail(log_path)}")
    if time.monotonic() > deadline:
        raise EmbeddedError(f"the Kafka broker did not serve on 127.0.0.1:{port} within {timeout:g} s"
                            f"{_tail(log_path)}")


def _tail(log_path: Path) -> str:
    """The last lines of log_path, to end an error message with (the first thing an operator would read)."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    except OSError:
        return f"; no log at {log_path}"
    return f"; the last lines of {log_path}:\n" + "\n".join(lines)
