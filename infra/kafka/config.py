"""The one place where ModelBus settings become librdkafka properties.

Apache Kafka in production and tansu in the embedded stack take the same keys;
SASL/TLS settings pass straight through, and ``kafka.extra`` carries anything
else verbatim.
"""

from __future__ import annotations

import logging
from typing import Any

from infra.settings import KafkaSettings

LIBRDKAFKA_LOG = logging.getLogger("modelbus.librdkafka")


def common_config(k: KafkaSettings) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap.servers": k.bootstrap_servers,
        "security.protocol": k.security_protocol,
        # librdkafka's own log lines go through Python logging (one format, one level knob)
        # instead of being written raw to stderr over progress bars and CLI output.
        "logger": LIBRDKAFKA_LOG,
    }
    optional = {
        "sasl.mechanism": k.sasl_mechanism,
        "sasl.username": k.sasl_username,
        "sasl.password": k.sasl_password.get_secret_value() if k.sasl_password else None,
        "ssl.ca.location": k.ssl_ca_location,
        "ssl.certificate.location": k.ssl_certificate_location,
        "ssl.key.location": k.ssl_key_location,
        "ssl.key.password": k.ssl_key_password.get_secret_value() if k.ssl_key_password else None,
    }
    conf.update({key: v for key, v in optional.items() if v is not None})
    return conf


def producer_config(k: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    conf = common_config(k)
    conf.update({
        "enable.idempotence": True,   # implies acks=all and ordered, de-duplicated retries
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "message.timeout.ms": 30000,
        "message.max.bytes": max(1_000_000, k.max_message_bytes + 64 * 1024),   # the limit is ours (size.py)
    })
    conf.update(k.extra)
    conf.update(overrides)
    return conf


def consumer_config(k: KafkaSettings, group_id: str, **overrides: Any) -> dict[str, Any]:
    conf = common_config(k)
    conf.update({
        "group.id": group_id,
        "enable.auto.commit": False,          # commits happen only after the work is durable
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": k.session_timeout_ms,
        "heartbeat.interval.ms": k.heartbeat_interval_ms,
        "max.poll.interval.ms": k.max_poll_interval_ms,
        "partition.assignment.strategy": "range",
    })
    conf.update(k.extra)
    conf.update(overrides)
    return conf


def admin_config(k: KafkaSettings) -> dict[str, Any]:
    conf = common_config(k)
    conf.update({key: v for key, v in k.extra.items() if not key.startswith(("linger", "acks", "enable."))})
    return conf


def redacted(conf: dict[str, Any]) -> dict[str, Any]:
    """A copy safe to log: secret values replaced."""
    return {k: ("***" if "password" in k or "secret" in k else v) for k, v in conf.items()}
