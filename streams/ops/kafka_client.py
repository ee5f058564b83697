"""Connection settings shared by every Kafka client the project makes (librdkafka).

Components take a ``KafkaTarget``: a bootstrap string (plaintext, as tests and the
local demo use) or the full connection mapping ``Settings.kafka()`` gives, which
adds SASL/SCRAM when the broker requires it. Keeping this in one place is what
lets the secure mode reach every producer, consumer and admin client.
"""

from __future__ import annotations

from typing import Any, Mapping, Union

# Built from the settings, so defined there (the bottom layer); named here too for the clients.
from streams.settings import SCRAM_MECHANISM, sasl_config

__all__ = ["KafkaTarget", "SCRAM_MECHANISM", "client_config", "sasl_config"]

KafkaTarget = Union[str, Mapping[str, Any]]


def client_config(target: KafkaTarget, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """librdkafka configuration for ``target`` plus ``extra`` (``extra`` wins)."""
    conf: dict[str, Any] = {"bootstrap.servers": target} if isinstance(target, str) else dict(target)
    conf.update(extra or {})
    return conf


def bootstrap_of(target: KafkaTarget) -> str:
    return target if isinstance(target, str) else str(target["bootstrap.servers"])

