"""Settings from the environment: defaults, parsing, clear errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from streams.settings import REPO_ROOT, Settings, SettingsError, env_var_names


def test_defaults():
    s = Settings.from_env({})
    assert s == Settings()
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.schemas_dir == REPO_ROOT / "schemas" and (s.schemas_dir / "customer_signup" / "v1.avsc").is_file()
    assert s.tenants == frozenset({"acme", "globex"})
    assert (s.raw_topic, s.dlq_topic) == ("events.raw", "events.dlq")
    assert (s.partitions, s.tenant_partitions, s.replication) == (4, 2, 1)
    assert s.max_event_bytes == 256 * 1024
    assert s.web_enabled is True
    assert s.data_dir == s.stack_dir / "worker"
    assert s.log_level == "INFO"


def test_empty_values_mean_default():
    env = {name: "" for name in env_var_names()}
    assert Settings.from_env(env) == Settings()


# A valid, non-default value for every variable, and what the field must become.
CUSTOM = {
    "STREAMS_KAFKA_BOOTSTRAP": ("k1:9093,k2:9093", "k1:9093,k2:9093"),
    "STREAMS_REDIS_URL": ("redis://r:6380/2", "redis://r:6380/2"),
    "STREAMS_SCHEMAS_DIR": ("/opt/schemas", Path("/opt/schemas")),
    "STREAMS_TENANTS": (" initech , umbrella-2,,", frozenset({"initech", "umbrella-2"})),
    "STREAMS_APP_ID": ("app-x", "app-x"),
    "STREAMS_RAW_TOPIC": ("raw.x", "raw.x"),
    "STREAMS_DLQ_TOPIC": ("dlq.x", "dlq.x"),
    "STREAMS_QUARANTINE_TOPIC": ("quarantine.x", "quarantine.x"),
    "STREAMS_LOG_FORMAT": ("JSON", "json"),
    "STREAMS_QUARANTINE_RETENTION_MS": ("7200000", 7200000),
    "STREAMS_PARTITIONS": ("12", 12),
    "STREAMS_TENANT_PARTITIONS": ("3", 3),
    "STREAMS_REPLICATION": ("3", 3),
    "STREAMS_MAX_EVENT_BYTES": ("1024", 1024),
    "STREAMS_BATCH_SIZE": ("50", 50),
    "STREAMS_BATCH_WITHIN": ("0.5", 0.5),
    "STREAMS_WEB_PORT": ("0", 0),
    "STREAMS_WORKER_PROCESSES": ("3", 3),
    "STREAMS_WEB_ENABLED": ("false", False),
    "STREAMS_WEB_HOST": ("0.0.0.0", "0.0.0.0"),
    "STREAMS_WEB_TLS_CERT": ("/etc/streams/web.crt", "/etc/streams/web.crt"),
    "STREAMS_WEB_TLS_KEY": ("/etc/streams/web.key", "/etc/streams/web.key"),
    "STREAMS_DATA_DIR": ("/var/data", Path("/var/data")),
    "STREAMS_STACK_DIR": ("/var/stack", Path("/var/stack")),
    "STREAMS_KAFKA_VERSION": ("3.9.0", "3.9.0"),
    "STREAMS_JAR_CACHE": ("/opt/jars", Path("/opt/jars")),
    "STREAMS_MASTER_KEY_FILE": ("/run/secrets/master.key", Path("/run/secrets/master.key")),
    "STREAMS_AUDIT_TOPIC": ("audit.x", "audit.x"),
    "STREAMS_REQUESTS_TOPIC": ("req.x", "req.x"),
    "STREAMS_TENANT_REGIMES": ("b=opt_in, a=opt_out", (("a", "opt_out"), ("b", "opt_in"))),
    "STREAMS_LOG_LEVEL": ("debug", "DEBUG"),
    "STREAMS_SINK_RETRY_MAX_SECONDS": ("30", 30.0),
    "STREAMS_TENANT_RETENTION_MS": ("86400000", 86400000),
    "STREAMS_SEGMENT_MS": ("500", 500),
    "STREAMS_MAX_COMPACTION_LAG_MS": ("1000", 1000),
    "STREAMS_MIN_CLEANABLE_DIRTY_RATIO": ("0.01", 0.01),
    "STREAMS_TOMBSTONE_RETENTION_MS": ("0", 0),
    "STREAMS_FILE_DELETE_DELAY_MS": ("0", 0),
    "STREAMS_RAW_PRUNE_INTERVAL": ("0", 0.0),
    "STREAMS_SESSION_TIMEOUT": ("6", 6.0),
    "STREAMS_KAFKA_SECURITY": ("sasl_plaintext", "SASL_PLAINTEXT"),
    "STREAMS_KAFKA_USERNAME": ("pipeline", "pipeline"),
    "STREAMS_KAFKA_PASSWORD": ("s3cret-pass-word", "s3cret-pass-word"),
    "STREAMS_KAFKA_REAUTH_MS": ("15000", 15000),
    "STREAMS_API_RATE_PER_KEY": ("250", 250.0),
    "STREAMS_API_DENIED_RATE_PER_KEY": ("0", 0.0),
    "STREAMS_API_RATE_PER_ADDRESS": ("2.5", 2.5),
    "STREAMS_API_DENIAL_AUDIT_WINDOW": ("1", 1.0),
    "STREAMS_FAIR_QUANTUM": ("64", 64),
}
# Variables that only make sense with another one.
COMPANIONS = {"STREAMS_KAFKA_SECURITY": {"STREAMS_KAFKA_PASSWORD": "s3cret-pass-word"},
              "STREAMS_WEB_TLS_CERT": {"STREAMS_WEB_TLS_KEY": "/etc/streams/web.key"},
              "STREAMS_WEB_TLS_KEY": {"STREAMS_WEB_TLS_CERT": "/etc/streams/web.crt"}}


def test_env_var_names_cover_every_field():
    names = env_var_names()
    assert len(names) == len(set(names)) == len(dataclasses.fields(Settings))
    assert set(names) == set(CUSTOM)


@pytest.mark.parametrize("var", sorted(CUSTOM))
def test_each_variable_is_read(var):
    raw, expected = CUSTOM[var]
    field = var.removeprefix("STREAMS_").lower()
    s = Settings.from_env({var: raw, **COMPANIONS.get(var, {})})
    assert getattr(s, field) == expected
    assert getattr(Settings(), field) != expected  # the variable really changed something


def test_all_variables_together():
    s = Settings.from_env({k: v for k, (v, _) in CUSTOM.items()})
    for var, (_, expected) in CUSTOM.items():
        assert getattr(s, var.removeprefix("STREAMS_").lower()) == expected, var


def test_data_dir_follows_stack_dir():
    s = Settings.from_env({"STREAMS_STACK_DIR": "/tmp/st"})
    assert s.stack_dir == Path("/tmp/st") and s.data_dir == Path("/tmp/st/worker")


def test_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("STREAMS_PARTITIONS", "7")
    assert Settings.from_env().partitions == 7


@pytest.mark.parametrize("raw", ["0", "no", "FALSE", " No "])
def test_web_disabled(raw):
    assert Settings.from_env({"STREAMS_WEB_ENABLED": raw}).web_enabled is False


@pytest.mark.parametrize("raw", ["1", "true", "yes"])
def test_web_enabled(raw):
    assert Settings.from_env({"STREAMS_WEB_ENABLED": raw}).web_enabled is True


@pytest.mark.parametrize("var,raw", [("STREAMS_PARTITIONS", "four"), ("STREAMS_BATCH_SIZE", "1.5"),
                                     ("STREAMS_WEB_PORT", "80a"), ("STREAMS_MAX_EVENT_BYTES", "1e6")])
def test_bad_int(var, raw):
    with pytest.raises(SettingsError) as ei:
        Settings.from_env({var: raw})
    assert var in str(ei.value) and "integer" in str(ei.value) and repr(raw) in str(ei.value)


@pytest.mark.parametrize("var,raw,minimum", [("STREAMS_PARTITIONS", "0", 1), ("STREAMS_REPLICATION", "-1", 1),
                                             ("STREAMS_MAX_EVENT_BYTES", "63", 64), ("STREAMS_WEB_PORT", "-5", 0)])
def test_int_below_minimum(var, raw, minimum):
    with pytest.raises(SettingsError, match=f"{var} must be >= {minimum}"):
        Settings.from_env({var: raw})


@pytest.mark.parametrize("raw", ["soon", "0", "-1"])
def test_bad_float(raw):
    with pytest.raises(SettingsError, match="STREAMS_BATCH_WITHIN"):
        Settings.from_env({"STREAMS_BATCH_WITHIN": raw})


@pytest.mark.parametrize("raw", ["nan", "inf"])
def test_non_finite_float_rejected(raw):
    with pytest.raises(SettingsError):
        Settings.from_env({"STREAMS_BATCH_WITHIN": raw})


@pytest.mark.parametrize("raw", ["acme,Globex", "acme,bad_name", "acme,1st", "a/b", "x" * 64, "acme,t:{x}"])
def test_bad_tenant_name_is_a_clear_value_error(raw):
    with pytest.raises(ValueError, match="invalid tenant name") as ei:
        Settings.from_env({"STREAMS_TENANTS": raw})
    assert "lowercase" in str(ei.value)


def test_bad_tenant_name_is_a_settings_error():
    with pytest.raises(SettingsError, match="STREAMS_TENANTS"):
        Settings.from_env({"STREAMS_TENANTS": "acme,Bad Name"})


def test_tenant_topic():
    assert Settings().tenant_topic("acme") == "tenant.acme.events"


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().partitions = 9  # type: ignore[misc]


def test_to_env_round_trips():
    from streams.settings import to_env

    s = Settings.from_env({k: v for k, (v, _) in CUSTOM.items()})
    assert Settings.from_env(to_env(s)) == s


@pytest.mark.parametrize("raw", ["0", "1.5", "-0.1", "x"])
def test_dirty_ratio_must_be_a_ratio(raw):
    with pytest.raises(SettingsError, match="STREAMS_MIN_CLEANABLE_DIRTY_RATIO"):
        Settings.from_env({"STREAMS_MIN_CLEANABLE_DIRTY_RATIO": raw})


def test_raw_pruning_can_be_turned_off_but_not_negative():
    assert Settings.from_env({"STREAMS_RAW_PRUNE_INTERVAL": "0"}).raw_prune_interval == 0
    with pytest.raises(SettingsError, match=">= 0"):
        Settings.from_env({"STREAMS_RAW_PRUNE_INTERVAL": "-1"})


def test_sasl_needs_a_password_and_never_shows_it():
    with pytest.raises(SettingsError, match="STREAMS_KAFKA_PASSWORD"):
        Settings.from_env({"STREAMS_KAFKA_SECURITY": "SASL_PLAINTEXT"})
    with pytest.raises(SettingsError, match="PLAINTEXT or SASL_PLAINTEXT"):
        Settings.from_env({"STREAMS_KAFKA_SECURITY": "SSL"})
    s = Settings.from_env({"STREAMS_KAFKA_SECURITY": "SASL_PLAINTEXT", "STREAMS_KAFKA_PASSWORD": "pw-never-shown-42"})
    assert "pw-never-shown-42" not in repr(s)
    assert s.kafka() == {"bootstrap.servers": s.kafka_bootstrap, "security.protocol": "SASL_PLAINTEXT",
                         "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "admin",
                         "sasl.password": "pw-never-shown-42"}
    assert Settings().kafka() == {"bootstrap.servers": Settings().kafka_bootstrap}


def test_the_web_server_binds_loopback_by_default_and_tls_needs_both_files():
    assert Settings.from_env({}).web_host == "127.0.0.1"
    for one in ({"STREAMS_WEB_TLS_CERT": "/c.pem"}, {"STREAMS_WEB_TLS_KEY": "/k.pem"}):
        with pytest.raises(SettingsError, match="STREAMS_WEB_TLS_CERT and STREAMS_WEB_TLS_KEY"):
            Settings.from_env(one)
