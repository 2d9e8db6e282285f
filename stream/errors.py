"""Every exception trustgap raises on purpose, under one root, so a caller can catch all of them at once.

    TrustgapError
    ├── ConfigError            a setting is wrong (the message says which and what to fix)
    │   └── SecurityMismatch   the broker or Redis refused the credentials, or the TLS settings do not match it
    ├── CliError               a command failed in a way its user can fix (printed as one line, with an exit code)
    ├── EmbeddedError          the embedded broker or redis-server did not start
    ├── Unreachable            a service did not answer (the message says where trustgap looked)
    │   ├── BrokerUnreachable  the Kafka broker (also a ClientError: the SDK raises it too)
    │   └── RedisUnreachable   Redis
    ├── PortInUse              another process holds the worker's web port
    ├── RedisRestarted         Redis answered from another process than the one the worker reconciled with
    ├── OldLayout              Redis holds state in a layout this version does not read (the message says how to move)
    └── ClientError            raised by the producer SDK (stream.client)
        ├── InvalidEvent       the event breaks contract v1 (also a ValueError)
        │   └── NaiveTimestamp a datetime without a timezone
        ├── BufferFull         the client's buffer stayed full for block_timeout
        ├── DeliveryError      the broker refused or lost messages
        ├── BrokerUnreachable
        └── ClientClosed       the client was used after close()

Where an operator must act, the message says what to do. Nothing here imports anything but the standard library,
so the pure core and the SDK can raise these.
"""

from __future__ import annotations


class TrustgapError(Exception):
    """Root of every error trustgap raises on purpose."""


class ConfigError(TrustgapError):
    """A setting is wrong; the message is one line that says what to fix."""


class SecurityMismatch(ConfigError):
    """A service answered but refused trustgap's credentials, presented a certificate the configured CA did not sign,
    or speaks another protocol (TLS or not) than the settings say; retrying cannot help until a setting changes."""


class PortInUse(TrustgapError):
    """Another process listens on the worker's web port; the message names the setting."""


class OldLayout(TrustgapError):
    """Redis holds trustgap state written in an older layout; the message says how to move the deployment."""


class CliError(TrustgapError):
    """A failure the user can fix; printed as one line, and the command exits with `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class EmbeddedError(TrustgapError):
    """The embedded stack could not start; the message says which process and where its log is."""


class Unreachable(TrustgapError):
    """A service did not answer; the message says which, where trustgap looked, and what to check."""


class RedisUnreachable(Unreachable):
    """Redis did not answer."""


class RedisRestarted(TrustgapError):
    """Redis answered from a different process than the one the worker reconciled its offsets with."""


class ClientError(TrustgapError):
    """Base of every error the producer SDK raises."""


class InvalidEvent(ClientError, ValueError):
    """The event breaks contract v1; the message names the field and what to fix."""


class NaiveTimestamp(InvalidEvent):
    """A datetime without a timezone: trustgap cannot tell which hour it means."""


class BufferFull(ClientError):
    """The buffer stayed full for `block_timeout` seconds (broker slow or down); the event was not accepted."""


class DeliveryError(ClientError):
    """The broker refused or lost messages; the message says how many events were concerned."""


class BrokerUnreachable(Unreachable, ClientError):
    """The broker did not answer; the message says where trustgap looked."""


class ClientClosed(ClientError):
    """The client was used after close()."""
