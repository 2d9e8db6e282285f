"""Checks a command runs before it starts: the broker and Redis accept trustgap's address, TLS settings and
credentials, and a worker's web port is free. Each failure is one exception whose message names the setting to
fix and never holds a secret.

Without them a wrong password or CA reaches the clients themselves: librdkafka logs a line per retry for as long as
it is left running and aiokafka or aiohttp end the worker with a traceback. A probe answers in a bounded time
instead, and the reason is read from what the client reported (librdkafka's error callback, redis-py's exception
and its cause). A plaintext client on a TLS port only sees the connection close, so that case is told apart by a
TLS handshake of our own on the same port.

Raises (stream.errors): SecurityMismatch (a ConfigError: exit 2) when a service refused the credentials or the TLS
settings, or the protocols do not match; BrokerUnreachable / RedisUnreachable (exit 1) when nothing answered;
PortInUse (exit 1) when the web port is held by another process; ConfigError when web_host cannot be bound.
"""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from . import brokerprobe
from .brokerprobe import SETTINGS, Security, await_metadata, speaks_tls
from .errors import ConfigError, PortInUse, RedisUnreachable, SecurityMismatch, TrustgapError
from .settings import Settings

if TYPE_CHECKING:
    import redis

BROKER_TIMEOUT_S = 10.0
REDIS_TIMEOUT_S = 5.0
_REDIS_URL = "redis_url / TRUSTGAP_REDIS_URL"


# --- the web port -----------------------------------------------------------------------------------------------

def check_web_port(settings: Settings) -> None:
    """Raise PortInUse when another process listens on web_host:web_port (the worker would die binding it)."""
    if settings.web_port == 0:
        return  # any free port: nothing to collide with
    where = f"{settings.web_host}:{settings.web_port}"
    with socket.socket(socket.AF_INET6 if ":" in settings.web_host else socket.AF_INET) as sock:
        # as aiohttp binds: a port left in TIME_WAIT by a worker that just stopped is free to reuse
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((settings.web_host, settings.web_port))
        except socket.gaierror:
            raise ConfigError(f"web_host {settings.web_host!r} is not an address; set web_host / "
                              "TRUSTGAP_WEB_HOST") from None
        except OSError as err:
            raise web_port_problem(where, err.errno) from None


def web_port_problem(where: str, code: int | None) -> TrustgapError:
    """The error for a web endpoint that cannot bind `where`, by the bind's errno."""
    if code == errno.EADDRINUSE:
        return PortInUse(f"the web port {where} (/metrics, /health) is already in use by another process; set "
                         "web_port / TRUSTGAP_WEB_PORT to a free port, or stop what listens there")
    if code == errno.EADDRNOTAVAIL:
        return ConfigError(f"cannot bind the web endpoint to {where}: web_host is not an address of this machine; "
                           "set web_host / TRUSTGAP_WEB_HOST")
    if code == errno.EACCES:
        return ConfigError(f"not allowed to bind the web endpoint to {where} (a port below 1024 needs privileges); "
                           "set web_port / TRUSTGAP_WEB_PORT")
    return ConfigError(f"cannot bind the web endpoint to {where} ({errno.errorcode.get(code or 0, code)}); set "
                       "web_host / web_port (TRUSTGAP_WEB_HOST / TRUSTGAP_WEB_PORT)")


# --- the broker -------------------------------------------------------------------------------------------------

def check_broker(settings: Settings, timeout: float = BROKER_TIMEOUT_S) -> None:
    """Return once the broker answers a metadata request with the settings' security config, else raise (see
    stream.brokerprobe)."""
    from confluent_kafka.admin import AdminClient

    from .admin import bootstrap, confluent_config

    seen: list[Any] = []
    # log_level 0: the reasons come through error_cb, and librdkafka would otherwise print one line per retry
    admin = AdminClient(confluent_config(settings, error_cb=seen.append, log_level=0))
    await_metadata(admin, seen, bootstrap(settings), security_of(settings), SETTINGS, timeout)


def security_of(settings: Settings) -> Security:
    """The broker security the settings configure (never the password)."""
    return Security(settings.broker_security_protocol,
                    str(settings.broker_ssl_cafile) if settings.broker_ssl_cafile else None,
                    settings.broker_sasl_username)


def check_session_timeout(settings: Settings, timeout: float = BROKER_TIMEOUT_S) -> None:
    """Raise ConfigError when the broker would refuse the worker's consumer-group session timeout.

    Kafka answers a JoinGroup whose session is outside its group.min/max.session.timeout.ms (6 s to 30 min by
    default) with a fatal error that aiokafka logs once, after which the worker sits in no group and consumes
    nothing. A broker that does not describe its configs (Tansu) is not asked again: it takes any session."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

    from .admin import confluent_config

    admin = AdminClient(confluent_config(settings, log_level=0))
    try:
        broker = next(iter(admin.list_topics(timeout=timeout).brokers))
        resource = ConfigResource(ConfigResource.Type.BROKER, str(broker))
        entries = admin.describe_configs([resource])[resource].result(timeout)
        low, high = (int(entries[f"group.{edge}.session.timeout.ms"].value) for edge in ("min", "max"))
    except (KafkaException, KeyError, StopIteration, TypeError, ValueError):
        return
    session_ms = settings.broker_session_timeout * 1000
    if not low <= session_ms <= high:
        raise ConfigError(f"broker_session_timeout is {settings.broker_session_timeout:g}s but broker "
                          f"{settings.broker_url} accepts consumer sessions of {low / 1000:g}s to {high / 1000:g}s "
                          "(its group.min/max.session.timeout.ms); set broker_session_timeout / "
                          "TRUSTGAP_BROKER_SESSION_TIMEOUT within that range")


def broker_problem(settings: Settings, servers: str, reasons: Sequence[tuple[str, str]], timeout: float,
                   listener_speaks_tls: bool) -> TrustgapError:
    """The error for a broker that did not serve metadata, in the settings' words (stream.brokerprobe)."""
    return brokerprobe.broker_problem(servers, reasons, timeout, listener_speaks_tls, security_of(settings), SETTINGS)


# --- Redis ------------------------------------------------------------------------------------------------------

def redis_address(url: str) -> tuple[str, int] | None:
    """(host, port) of a redis:// or rediss:// URL, never its credentials; None for a unix socket."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        return None
    return parts.hostname, parts.port or 6379


def redis_problem(url: str, err: BaseException, listener_speaks_tls: bool | None) -> TrustgapError:
    """The error for a Redis that did not answer PING: from redis-py's exception (and what caused it) and whether
    the port answered a TLS handshake. The URL's password is never part of the message."""
    import redis

    parts = urlsplit(url)
    address = redis_address(url)
    where = f"redis at {address[0]}:{address[1]}" if address else "redis"
    cause = err.__cause__ or err.__context__
    if isinstance(err, redis.AuthenticationError) or "NOAUTH" in str(err) or "WRONGPASS" in str(err):
        return SecurityMismatch(f"{where} refused the password (or user) in redis_url; fix the credentials in "
                                f"{_REDIS_URL} (rediss://:PASSWORD@host:port/0)")
    if isinstance(cause, ssl.SSLCertVerificationError):
        ca = parse_qs(parts.query).get("ssl_ca_certs", [None])[0]
        trusted = f"the CA in ssl_ca_certs ({ca})" if ca else "the system's CAs (redis_url has no ssl_ca_certs)"
        return SecurityMismatch(f"{where} presented a TLS certificate that {trusted} did not sign "
                                f"({cause.verify_message}); set ?ssl_ca_certs=/path/ca.pem in {_REDIS_URL} to "
                                "the CA that signed the server's certificate")
    if parts.scheme == "redis" and listener_speaks_tls:
        return SecurityMismatch(f"{where} speaks TLS only but redis_url is redis://; use rediss:// with "
                                f"?ssl_ca_certs=/path/ca.pem in {_REDIS_URL}")
    if parts.scheme == "rediss" and listener_speaks_tls is False and isinstance(cause, ssl.SSLError):
        return SecurityMismatch(f"{where} does not speak TLS but redis_url is rediss://; use redis:// in "
                                f"{_REDIS_URL}, or enable TLS on the server")
    return RedisUnreachable(f"redis unreachable ({type(err).__name__}); check {_REDIS_URL}")


def check_redis(settings: Settings) -> redis.Redis:
    """Return a connected client (redis.Redis, or redis.RedisCluster with `redis_cluster`) that answered with the
    settings' URL, else raise; the caller closes it. A cluster node named without `redis_cluster`, or the reverse,
    is a ConfigError saying which setting to change."""
    import redis

    from .state.redis_io import UNAVAILABLE, sync_client

    url = settings.redis_url.get_secret_value()
    if settings.redis_cluster:
        try:
            client = sync_client(settings, REDIS_TIMEOUT_S)  # connects to the seed and reads the slot map
        except UNAVAILABLE as err:
            if "cluster mode is not enabled" in str(err).lower():
                raise ConfigError(f"redis at {_where(url)} is not a Redis Cluster node but redis_cluster is set; "
                                  "unset TRUSTGAP_REDIS_CLUSTER, or name a cluster node in redis_url") from None
            raise _unanswered(url, err) from None
        return client
    client = sync_client(settings, REDIS_TIMEOUT_S)
    try:
        client.ping()
        if str(client.info("cluster").get("cluster_enabled", 0)) == "1":
            client.close()
            raise ConfigError(f"redis at {_where(url)} is a Redis Cluster node; set TRUSTGAP_REDIS_CLUSTER=true "
                              "(redis_url names one node, the seed)")
        return client
    except redis.RedisError as err:
        client.close()
        raise _unanswered(url, err) from None


def _where(url: str) -> str:
    address = redis_address(url)
    return f"{address[0]}:{address[1]}" if address else url.split("@")[-1]


def _unanswered(url: str, err: BaseException) -> TrustgapError:
    """redis_problem, with the TLS probe made where only a protocol mismatch can explain the failure."""
    import redis

    address = redis_address(url)
    cause = err.__cause__ or err.__context__
    # only a connection that opened and then broke before any reply can be a protocol mismatch
    broke = (type(err) is redis.ConnectionError
             and not isinstance(cause, (ConnectionRefusedError, TimeoutError, ssl.SSLCertVerificationError)))
    tls = speaks_tls(*address) if address and broke else None
    return redis_problem(url, err, tls)
