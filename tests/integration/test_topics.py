"""Topics are declared by the project with their configs; the broker creates none by itself."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import ConfigResource

from streams.connections import admin_client
from streams.ops.topics import all_topics, ensure_topics

pytestmark = pytest.mark.integration


def test_declared_topics_exist_with_their_configs(make_settings):
    s = make_settings()
    admin = admin_client(s)
    md = admin.list_topics(timeout=10).topics
    for spec in all_topics(s):
        assert spec.name in md
        assert len(md[spec.name].partitions) == spec.partitions
        res = ConfigResource(ConfigResource.Type.TOPIC, spec.name)
        configs = admin.describe_configs([res])[res].result()
        for key, value in spec.config.items():
            assert configs[key].value == value, (spec.name, key)


def test_ensure_topics_is_idempotent(make_settings):
    s = make_settings()
    again = ensure_topics(s)
    assert set(again.values()) == {"exists"}


def test_broker_does_not_auto_create_topics(make_settings):
    s = make_settings()
    p = Producer({"bootstrap.servers": s.kafka_bootstrap, "message.timeout.ms": 3000,
                  "topic.metadata.refresh.interval.ms": 500})
    errors = []
    p.produce("not.declared.anywhere", b"x", on_delivery=lambda err, msg: errors.append(err))
    p.flush(10)
    assert errors and errors[0] is not None
    with pytest.raises(KafkaException):
        admin_client(s).describe_configs(
            [ConfigResource(ConfigResource.Type.TOPIC, "not.declared.anywhere")]
        )[ConfigResource(ConfigResource.Type.TOPIC, "not.declared.anywhere")].result()
