"""A secured pair for the security tests: a test CA made with `openssl`, Apache Kafka with a SASL_SSL listener
(SCRAM-SHA-512, its certificate signed by that CA) and a TLS-only redis-server with a password.

The broker keeps a PLAINTEXT listener on loopback for its own readiness probe (stream.embedded_kafka waits on it);
trustgap only ever talks to the SASL_SSL one. Everything is made under a directory the caller owns, and every
process is stopped by its own handle.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stream.embedded import free_port, stop
from stream.embedded_kafka import start_kafka, stop_kafka

SCRAM_MECHANISM = "SCRAM-SHA-512"
CERT_DAYS = "2"


@dataclass(frozen=True)
class Ca:
    """A certificate authority: its key signs server certificates, its certificate is what clients trust."""

    key: Path
    cert: Path


@dataclass(frozen=True)
class ServerCert:
    """A server's certificate (signed by a Ca) and its unencrypted PKCS#8 key, both PEM."""

    cert: Path
    key: Path

    def keystore(self, path: Path) -> Path:
        """The key followed by the certificate in one PEM file: Kafka's PEM keystore (`ssl.keystore.type=PEM`)."""
        path.write_text(self.key.read_text() + self.cert.read_text())
        return path


def need_openssl() -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed, so no test CA can be made")


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> Ca:
    """A self-signed CA in directory/<name>-ca.{key,pem}."""
    directory.mkdir(parents=True, exist_ok=True)
    key, cert = directory / f"{name}-ca.key", directory / f"{name}-ca.pem"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
             "-days", CERT_DAYS, "-subj", f"/CN={name} test CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return Ca(key, cert)


def server_cert(ca: Ca, directory: Path, name: str = "server") -> ServerCert:
    """A certificate for 127.0.0.1 and localhost signed by ca, as a server on loopback presents it."""
    key, csr, cert = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.pem"
    ext = directory / f"{name}.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
                   "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
             "-subj", "/CN=localhost")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key), "-CAcreateserial",
             "-out", str(cert), "-days", CERT_DAYS, "-extfile", str(ext))
    return ServerCert(cert, key)


@dataclass(frozen=True)
class SecureKafka:
    """A running broker: SASL_SSL (SCRAM) on `port`, PLAINTEXT on `plain_port` for the harness only."""

    port: int
    plain_port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def broker_url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}"

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"


def sasl_ssl_properties(plain_port: int, port: int, controller_port: int, keystore: Path) -> dict[str, str]:
    """server.properties over stream.embedded_kafka's defaults: a SASL_SSL listener taking SCRAM-SHA-512 with a
    PEM keystore, beside the PLAINTEXT one the broker talks to itself on."""
    return {
        "listeners": f"PLAINTEXT://127.0.0.1:{plain_port},SASL_SSL://127.0.0.1:{port},"
                     f"CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{plain_port},SASL_SSL://127.0.0.1:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
        "sasl.enabled.mechanisms": SCRAM_MECHANISM,
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "listener.name.sasl_ssl.ssl.keystore.type": "PEM",
        "listener.name.sasl_ssl.ssl.keystore.location": str(keystore),
    }


@contextlib.contextmanager
def secure_kafka(workdir: Path, cert: ServerCert, username: str, password: str) -> Iterator[SecureKafka]:
    """Run Apache Kafka with a SASL_SSL listener that knows one SCRAM-SHA-512 user, stopping it on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    plain_port, port, controller_port = free_port(), free_port(), free_port()
    keystore = cert.keystore(workdir / "keystore.pem")
    log_path = workdir / "kafka.log"
    proc = start_kafka(workdir, plain_port, controller_port, log_path,
                       sasl_ssl_properties(plain_port, port, controller_port, keystore),
                       scram=[f"{SCRAM_MECHANISM}=[name={username},password={password}]"])
    try:
        yield SecureKafka(port, plain_port, proc, log_path)
    finally:
        stop_kafka(proc)


@dataclass(frozen=True)
class TlsRedis:
    """A running redis-server that speaks TLS only, with `requirepass`."""

    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    def url(self, password: str, ca: Path, scheme: str = "rediss") -> str:
        """The URL an operator writes: rediss://:password@host:port/0?ssl_ca_certs=ca."""
        return f"{scheme}://:{password}@127.0.0.1:{self.port}/0?ssl_ca_certs={ca}"


@contextlib.contextmanager
def tls_redis(workdir: Path, cert: ServerCert, ca: Ca, password: str) -> Iterator[TlsRedis]:
    """Run redis-server with TLS on a free port (no plaintext port) and a password, stopping it on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    port, log_path = free_port(), workdir / "redis.log"
    with log_path.open("ab") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                                 "--tls-cert-file", str(cert.cert), "--tls-key-file", str(cert.key),
                                 "--tls-ca-cert-file", str(ca.cert), "--tls-auth-clients", "no",
                                 "--requirepass", password, "--save", "", "--appendonly", "no",
                                 "--dir", str(workdir)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        _wait_tls_redis(proc, TlsRedis(port, proc, log_path).url(password, ca.cert), log_path)
        yield TlsRedis(port, proc, log_path)
    finally:
        stop(proc)


def _wait_tls_redis(proc: subprocess.Popen[bytes], url: str, log_path: Path, timeout: float = 30.0) -> None:
    import redis

    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"redis-server exited with {proc.returncode}; see {log_path}"
        try:
            with redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2) as client:
                if client.ping():
                    return
        except redis.RedisError:
            pass
        assert time.monotonic() < deadline, f"the TLS redis-server did not answer within {timeout:g}s"
        time.sleep(0.1)


@dataclass(frozen=True)
class SecurePair:
    """A secured broker and Redis, the CA that signed both certificates, an unrelated CA, and the settings an
    operator would write for them (`env`). Has what tests.support.harness.Deployment reads of a stack."""

    kafka: SecureKafka
    redis: TlsRedis
    ca: Ca
    other_ca: Ca
    username: str
    kafka_password: str
    redis_password: str

    @property
    def broker_url(self) -> str:
        return self.kafka.broker_url

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka.bootstrap_servers

    @property
    def redis_url(self) -> str:
        return self.redis.url(self.redis_password, self.ca.cert)

    @property
    def env(self) -> dict[str, str]:
        """TRUSTGAP_* as an operator sets them for SASL_SSL + SCRAM-SHA-512 and rediss://."""
        return {
            "TRUSTGAP_BROKER_URL": self.broker_url,
            "TRUSTGAP_BROKER_SECURITY_PROTOCOL": "SASL_SSL",
            "TRUSTGAP_BROKER_SASL_MECHANISM": SCRAM_MECHANISM,
            "TRUSTGAP_BROKER_SASL_USERNAME": self.username,
            "TRUSTGAP_BROKER_SASL_PASSWORD": self.kafka_password,
            "TRUSTGAP_BROKER_SSL_CAFILE": str(self.ca.cert),
            "TRUSTGAP_REDIS_URL": self.redis_url,
        }


@contextlib.contextmanager
def secure_pair(workdir: Path, username: str, kafka_password: str, redis_password: str) -> Iterator[SecurePair]:
    """Make the CAs and the server certificate, and run the secured broker and Redis until exit."""
    need_openssl()
    certs = workdir / "certs"
    ca, other_ca = make_ca(certs, "trustgap"), make_ca(certs, "unrelated")
    cert = server_cert(ca, certs)
    with secure_kafka(workdir / "kafka", cert, username, kafka_password) as kafka, \
            tls_redis(workdir / "redis", cert, ca, redis_password) as redis:
        yield SecurePair(kafka, redis, ca, other_ca, username, kafka_password, redis_password)
