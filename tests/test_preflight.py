"""What a start-up check says when the broker, Redis or the web port refuses: one line naming the setting to fix,
the right exception (so the right exit code), and never a secret. tests/test_security_real.py runs the same checks
against a real SASL_SSL broker and a TLS Redis; these pin the mapping from what the clients report to the message.
"""

from __future__ import annotations

import errno
import socket
import ssl
from pathlib import Path

import pytest
import redis

from stream.brokerprobe import first_address
from stream.cli import exit_code
from stream.errors import BrokerUnreachable, ConfigError, PortInUse, RedisUnreachable, SecurityMismatch
from stream.preflight import (broker_problem, check_web_port, redis_address, redis_problem,
                              web_port_problem)
from stream.settings import Settings

SERVERS = "127.0.0.1:9093"
SECRET = "pw-Zq9-secret"
AUTH = ("_AUTHENTICATION", f"sasl_ssl://{SERVERS}/bootstrap: SASL authentication error: Authentication failed "
        "during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512 (after 313ms in state "
        "AUTH_REQ)")
UNKNOWN_CA = ("_SSL", f"sasl_ssl://{SERVERS}/bootstrap: SSL handshake failed: error:0A000086:SSL routines::"
              "certificate verify failed: broker certificate could not be verified, verify that ssl.ca.location is "
              "correctly configured (after 7ms in state SSL_HANDSHAKE)")
TLS_TO_PLAIN = ("_TRANSPORT", f"sasl_ssl://{SERVERS}/bootstrap: SSL handshake failed: Disconnected: SSL connection "
                "closed by peer: connecting to a PLAINTEXT broker listener? (after 0ms in state SSL_HANDSHAKE)")
REFUSED = ("_TRANSPORT", f"{SERVERS}/bootstrap: Connect to ipv4#{SERVERS} failed: Connection refused (after 0ms in "
           "state CONNECT)")
DOWN = ("_ALL_BROKERS_DOWN", "1/1 brokers are down")


def sasl_settings(**extra: object) -> Settings:
    fields: dict[str, object] = {
        "broker_url": f"kafka://{SERVERS}", "broker_security_protocol": "SASL_SSL",
        "broker_sasl_mechanism": "SCRAM-SHA-512", "broker_sasl_username": "trustgap", "broker_sasl_password": SECRET,
        "broker_ssl_cafile": Path("/etc/tg/ca.pem"), **extra}
    return Settings(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(("settings", "reasons", "tls", "kind", "says"), [
    # the broker refused the SCRAM login: the credentials are named, the librdkafka reason kept without its prefix
    (sasl_settings(), [AUTH, DOWN], False, SecurityMismatch,
     "broker 127.0.0.1:9093 refused the SASL login of user 'trustgap' (SASL authentication error: Authentication "
     "failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512); check "
     "broker_sasl_username / broker_sasl_password (TRUSTGAP_BROKER_SASL_USERNAME / TRUSTGAP_BROKER_SASL_PASSWORD) "
     "and broker_sasl_mechanism"),
    # the broker's certificate was signed by another CA than broker_ssl_cafile
    (sasl_settings(), [UNKNOWN_CA, DOWN], False, SecurityMismatch,
     "broker 127.0.0.1:9093 presented a TLS certificate that the CA in broker_ssl_cafile (/etc/tg/ca.pem) did not "
     "sign; set broker_ssl_cafile / TRUSTGAP_BROKER_SSL_CAFILE to the CA that signed the broker's certificate"),
    # ... and without a cafile it is the system's CAs that did not sign it
    (sasl_settings(broker_ssl_cafile=None), [UNKNOWN_CA], False, SecurityMismatch,
     "the system's CAs (broker_ssl_cafile is not set) did not sign"),
    # a TLS client on a plaintext listener
    (sasl_settings(), [TLS_TO_PLAIN, DOWN], False, SecurityMismatch,
     "broker 127.0.0.1:9093 does not speak TLS but broker_security_protocol is SASL_SSL; set "
     "broker_security_protocol / TRUSTGAP_BROKER_SECURITY_PROTOCOL to PLAINTEXT or SASL_PLAINTEXT"),
    # a plaintext client on a TLS listener: librdkafka only sees the broker down, our own handshake tells why
    (Settings(broker_url=f"kafka://{SERVERS}"), [DOWN], True, SecurityMismatch,
     "broker 127.0.0.1:9093 expects TLS but broker_security_protocol is PLAINTEXT; set broker_security_protocol / "
     "TRUSTGAP_BROKER_SECURITY_PROTOCOL to SSL or SASL_SSL (with broker_ssl_cafile / TRUSTGAP_BROKER_SSL_CAFILE)"),
    # nothing listens: unreachable (a runtime failure), with the transport's reason
    (Settings(broker_url=f"kafka://{SERVERS}"), [REFUSED, DOWN], False, BrokerUnreachable,
     "broker 127.0.0.1:9093 unreachable (no answer in 5s: Connect to ipv4#127.0.0.1:9093 failed: Connection "
     "refused); check broker_url / TRUSTGAP_BROKER_URL"),
    # no reason at all (a broker that accepts and never answers)
    (Settings(broker_url=f"kafka://{SERVERS}"), [], False, BrokerUnreachable,
     "broker 127.0.0.1:9093 unreachable (no answer in 5s); check broker_url / TRUSTGAP_BROKER_URL"),
])
def test_a_broker_failure_is_told_by_what_librdkafka_reported(
        settings: Settings, reasons: list[tuple[str, str]], tls: bool, kind: type[Exception], says: str) -> None:
    err = broker_problem(settings, SERVERS, reasons, 5.0, tls)
    assert type(err) is kind
    assert says in str(err) and "\n" not in str(err) and SECRET not in str(err)


def _connection_error(cause: BaseException) -> redis.ConnectionError:
    err = redis.ConnectionError("Error connecting to 127.0.0.1:6380")
    err.__cause__ = cause
    return err


def _unknown_ca() -> ssl.SSLCertVerificationError:
    cause = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    cause.verify_message = "unable to get local issuer certificate"
    return cause


TLS_URL = f"rediss://:{SECRET}@127.0.0.1:6380/0?ssl_ca_certs=/etc/tg/ca.pem"


@pytest.mark.parametrize(("url", "err", "tls", "kind", "says"), [
    # WRONGPASS (redis-py's AuthenticationError)
    (TLS_URL, redis.AuthenticationError("invalid username-password pair"), None, SecurityMismatch,
     "redis at 127.0.0.1:6380 refused the password (or user) in redis_url; fix the credentials in redis_url / "
     "TRUSTGAP_REDIS_URL"),
    # NOAUTH: no password given to a Redis that needs one
    ("redis://127.0.0.1:6380/0", redis.ResponseError("NOAUTH Authentication required."), None, SecurityMismatch,
     "refused the password (or user) in redis_url"),
    # the server's certificate was signed by another CA than ssl_ca_certs
    (TLS_URL, _connection_error(_unknown_ca()), None, SecurityMismatch,
     "redis at 127.0.0.1:6380 presented a TLS certificate that the CA in ssl_ca_certs (/etc/tg/ca.pem) did not "
     "sign (unable to get local issuer certificate); set ?ssl_ca_certs=/path/ca.pem in redis_url / "
     "TRUSTGAP_REDIS_URL"),
    # redis:// on a TLS port: the server drops the connection, our handshake says it speaks TLS
    (f"redis://:{SECRET}@127.0.0.1:6380/0", _connection_error(ConnectionResetError(104, "reset")), True,
     SecurityMismatch, "redis at 127.0.0.1:6380 speaks TLS only but redis_url is redis://; use rediss://"),
    # rediss:// on a plaintext port
    (TLS_URL, _connection_error(ssl.SSLEOFError(8, "EOF occurred in violation of protocol")), False,
     SecurityMismatch, "redis at 127.0.0.1:6380 does not speak TLS but redis_url is rediss://"),
    # nothing listens: unreachable, as before
    (TLS_URL, _connection_error(ConnectionRefusedError(111, "refused")), None, RedisUnreachable,
     "redis unreachable (ConnectionError); check redis_url / TRUSTGAP_REDIS_URL"),
])
def test_a_redis_failure_is_told_by_the_exception_and_its_cause(
        url: str, err: Exception, tls: bool | None, kind: type[Exception], says: str) -> None:
    problem = redis_problem(url, err, tls)
    assert type(problem) is kind
    assert says in str(problem) and "\n" not in str(problem) and SECRET not in str(problem)


def test_a_refused_setting_exits_2_and_an_absent_service_or_a_taken_port_exits_1() -> None:
    # 2: nothing changes until an operator fixes a setting; 1: the world may change (the service comes, the port
    # is freed), so a supervisor's restart can help.
    assert exit_code(SecurityMismatch("x")) == 2
    assert isinstance(SecurityMismatch("x"), ConfigError)
    assert exit_code(BrokerUnreachable("x")) == exit_code(RedisUnreachable("x")) == exit_code(PortInUse("x")) == 1


def test_a_web_port_held_by_another_socket_is_named() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(PortInUse, match=rf"the web port 127\.0\.0\.1:{port} .* set web_port / "
                                            "TRUSTGAP_WEB_PORT"):
            check_web_port(Settings(web_port=port))
    check_web_port(Settings(web_port=port))  # free again once its holder closed
    check_web_port(Settings(web_port=0))  # any port: nothing to check


@pytest.mark.parametrize(("code", "kind", "says"), [
    (errno.EADDRINUSE, PortInUse, "already in use"),
    (errno.EADDRNOTAVAIL, ConfigError, "web_host is not an address of this machine; set web_host"),
    (errno.EACCES, ConfigError, "a port below 1024 needs privileges"),
])
def test_each_bind_failure_names_its_setting(code: int, kind: type[Exception], says: str) -> None:
    err = web_port_problem("10.9.9.9:80", code)
    assert type(err) is kind and says in str(err)


@pytest.mark.parametrize(("servers", "address"), [
    ("127.0.0.1:9093", ("127.0.0.1", 9093)),
    ("kafka-1:9093,kafka-2:9093", ("kafka-1", 9093)),  # the first one is probed
    ("[::1]:9093", ("::1", 9093)),
    ("kafka-1", None),  # no port: nothing to probe
])
def test_the_first_bootstrap_address_is_probed(servers: str, address: tuple[str, int] | None) -> None:
    assert first_address(servers) == address


@pytest.mark.parametrize(("url", "address"), [
    (f"rediss://:{SECRET}@redis.internal:6380/0?ssl_ca_certs=/ca.pem", ("redis.internal", 6380)),
    (f"redis://user:{SECRET}@10.0.0.5/0", ("10.0.0.5", 6379)),  # Redis's default port
    ("unix:///run/redis.sock", None),
])
def test_a_redis_address_never_carries_its_credentials(url: str, address: tuple[str, int] | None) -> None:
    assert redis_address(url) == address
