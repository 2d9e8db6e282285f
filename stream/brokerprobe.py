"""Why a Kafka broker does not serve a client: the reason told from what librdkafka reported, in the words of the
configuration the user wrote.

The commands' preflight (stream.preflight, naming trustgap's settings) and the SDK's `Client.check` (naming
librdkafka's config keys) ask a confluent-kafka client for metadata until it answers, and otherwise read why from
its error callback. A refused password or certificate ends the wait at once; only an address that does not answer
waits out the timeout. A TLS listener just drops a plaintext client, which librdkafka reports as nothing but a
broker down, so that case is told apart by a TLS handshake of our own on the same port.

Imports the standard library and stream.errors only (confluent-kafka when asked to wait), so the SDK can use it.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import BrokerUnreachable, SecurityMismatch, TrustgapError

TLS_PROBE_TIMEOUT_S = 3.0
# librdkafka error names that no retry can cure: the broker refused the credentials, or the TLS handshake failed
# (as does a TLS client on a plaintext listener, which librdkafka recognises by the hint below).
DECISIVE = ("_AUTHENTICATION", "_SSL")
PLAINTEXT_LISTENER_HINT = "connecting to a PLAINTEXT broker listener"


@dataclass(frozen=True)
class Names:
    """How a message names what to fix: each key as the user's configuration spells it, and the full hint."""

    protocol: str        # the security protocol's key
    protocol_fix: str
    cafile: str          # the CA file's key
    cafile_fix: str
    sasl_fix: str
    address: str         # the broker address's key
    address_fix: str


SETTINGS = Names(
    protocol="broker_security_protocol",
    protocol_fix="broker_security_protocol / TRUSTGAP_BROKER_SECURITY_PROTOCOL",
    cafile="broker_ssl_cafile",
    cafile_fix="broker_ssl_cafile / TRUSTGAP_BROKER_SSL_CAFILE",
    sasl_fix=("broker_sasl_username / broker_sasl_password (TRUSTGAP_BROKER_SASL_USERNAME / "
              "TRUSTGAP_BROKER_SASL_PASSWORD) and broker_sasl_mechanism"),
    address="broker_url", address_fix="broker_url / TRUSTGAP_BROKER_URL")
"""trustgap's settings (a command, or a Client made by Client.from_settings)."""

LIBRDKAFKA = Names(
    protocol="security.protocol", protocol_fix="security.protocol", cafile="ssl.ca.location",
    cafile_fix="ssl.ca.location", sasl_fix="sasl.username / sasl.password and sasl.mechanism",
    address="bootstrap.servers", address_fix="bootstrap.servers")
"""librdkafka's config keys (a Client given `conf`)."""


@dataclass(frozen=True)
class Security:
    """What the client was configured with: its security protocol, CA file and SASL user (never a password)."""

    protocol: str = "PLAINTEXT"
    cafile: str | None = None
    username: str | None = None


def first_address(servers: str) -> tuple[str, int] | None:
    """(host, port) of the first `host:port` in a comma-separated list, or None when it has no port."""
    first = servers.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def speaks_tls(host: str, port: int, timeout: float = TLS_PROBE_TIMEOUT_S) -> bool:
    """Whether host:port answers a TLS handshake (its certificate unchecked: this only asks which protocol)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=host):
            return True
    except ssl.SSLError as err:
        # A TLS server that wants what we did not offer (a client certificate) answers with an alert.
        return "ALERT" in str(err).upper()
    except OSError:
        return False


def await_metadata(client: Any, seen: Sequence[Any], servers: str, security: Security, names: Names,
                   timeout: float) -> None:
    """Return once `client` (a confluent-kafka Producer or AdminClient whose error_cb appends its KafkaErrors to
    `seen`) answers a metadata request, else raise what `broker_problem` makes of why not."""
    from confluent_kafka import KafkaException

    address = first_address(servers)
    tls: bool | None = None if address and "SSL" not in security.protocol else False
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.list_topics(timeout=min(1.0, max(0.1, deadline - time.monotonic())))
            return
        except KafkaException:
            client.poll(0)  # serves error_cb
        if tls is None and address is not None:
            tls = speaks_tls(*address)
        if tls or any(e.name() in DECISIVE or PLAINTEXT_LISTENER_HINT in e.str() for e in seen) \
                or time.monotonic() >= deadline:
            break
    raise broker_problem(servers, [(e.name(), e.str()) for e in seen], timeout, bool(tls), security, names)


def broker_problem(servers: str, reasons: Sequence[tuple[str, str]], timeout: float, listener_speaks_tls: bool,
                   security: Security, names: Names) -> TrustgapError:
    """The error for a broker that did not serve metadata: from librdkafka's (error name, text) pairs, and whether
    the listener answered a TLS handshake while the client spoke plaintext."""
    texts = [text for _, text in reasons]
    for name, text in reasons:
        if name == "_AUTHENTICATION":
            return SecurityMismatch(f"broker {servers} refused the SASL login of user {security.username or ''!r} "
                                    f"({_reason(text)}); check {names.sasl_fix}")
    for name, text in reasons:
        if name == "_SSL" or "certificate verify failed" in text:
            return SecurityMismatch(_tls_message(servers, text, security, names))
    if any(PLAINTEXT_LISTENER_HINT in t for t in texts):
        return SecurityMismatch(f"broker {servers} does not speak TLS but {names.protocol} is {security.protocol}; "
                                f"set {names.protocol_fix} to PLAINTEXT or SASL_PLAINTEXT, or point "
                                f"{names.address} at the broker's TLS listener")
    if listener_speaks_tls:
        return SecurityMismatch(f"broker {servers} expects TLS but {names.protocol} is {security.protocol}; set "
                                f"{names.protocol_fix} to SSL or SASL_SSL (with {names.cafile_fix})")
    transport = next((_reason(t) for n, t in reasons if n == "_TRANSPORT"), None)
    detail = f": {transport}" if transport else ""
    return BrokerUnreachable(f"broker {servers} unreachable (no answer in {timeout:g}s{detail}); check "
                             f"{names.address_fix}")


def _tls_message(servers: str, text: str, security: Security, names: Names) -> str:
    if "certificate verify failed" in text:
        trusted = (f"the CA in {names.cafile} ({security.cafile})" if security.cafile
                   else f"the system's CAs ({names.cafile} is not set)")
        return (f"broker {servers} presented a TLS certificate that {trusted} did not sign; set {names.cafile_fix} "
                "to the CA that signed the broker's certificate")
    return (f"TLS handshake with broker {servers} failed ({_reason(text)}); check {names.cafile_fix} and "
            f"{names.protocol_fix}")


def _reason(text: str) -> str:
    """librdkafka's error text without its `proto://host:port/id: ` prefix and `(after N ms in state X)` tail."""
    return re.sub(r"^(?:[a-z_]+://)?[^\s/]+/[^\s:]+: ", "", text.split(" (after ", 1)[0]).strip()
