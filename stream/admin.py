"""Kafka plumbing shared by the CLI commands: client config from settings, and topic creation."""

from __future__ import annotations

from typing import Any

from .errors import BrokerUnreachable as BrokerUnreachable  # the one class; callers also import it from here
from .settings import Settings


def bootstrap(settings: Settings) -> str:
    """`kafka://a:9092;b:9092` (Faust's form) -> `a:9092,b:9092` (librdkafka's)."""
    hosts = settings.broker_url.split("://", 1)[-1]
    return ",".join(h.strip() for h in hosts.replace(";", ",").split(",") if h.strip())


def confluent_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """librdkafka settings for producers/admin, credentials included, never logged."""
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap(settings),
                            "security.protocol": settings.broker_security_protocol}
    if settings.broker_security_protocol.startswith("SASL"):
        conf["sasl.mechanism"] = settings.broker_sasl_mechanism
        conf["sasl.username"] = settings.broker_sasl_username or ""
        conf["sasl.password"] = (settings.broker_sasl_password.get_secret_value()
                                 if settings.broker_sasl_password else "")
    if settings.broker_ssl_cafile:
        conf["ssl.ca.location"] = str(settings.broker_ssl_cafile)
    conf.update(extra)
    return conf


def ensure_topics(settings: Settings, timeout: float = 10.0) -> list[str]:
    """Create the event, alert and dead-letter topics if missing; returns the ones created."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient(confluent_config(settings))
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as err:
        raise BrokerUnreachable(f"broker {bootstrap(settings)} unreachable: {err.args[0]}") from None
    names = list(settings.topics.model_dump().values())
    wanted = [NewTopic(n, num_partitions=settings.topic_partitions, replication_factor=settings.topic_replication)
              for n in names if n not in existing]
    created = []
    for name, fut in (admin.create_topics(wanted, operation_timeout=timeout).items() if wanted else []):
        try:
            fut.result(timeout)
            created.append(name)
        except KafkaException as err:
            if "TOPIC_ALREADY_EXISTS" not in str(err):
                raise
    return created
