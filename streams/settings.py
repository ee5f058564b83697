"""The one settings object, read from the environment.

Every component receives a ``Settings`` instance; nothing reads ``os.environ``
on its own. Defaults run against the local stack that ``streams stack up``
starts, so a newcomer needs no configuration at all.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from streams.errors import StreamsError
from streams.records import is_valid_tenant_name, tenant_name_problem

REPO_ROOT = Path(__file__).resolve().parent.parent

SCRAM_MECHANISM = "SCRAM-SHA-512"


def sasl_config(bootstrap: str, username: str, password: str) -> dict[str, Any]:
    """librdkafka connection settings of a SCRAM user (here, not in ``streams.connections``,
    because ``Settings.kafka()`` builds them and settings imports nothing above the bottom layer)."""
    return {"bootstrap.servers": bootstrap, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": SCRAM_MECHANISM, "sasl.username": username, "sasl.password": password}


class SettingsError(StreamsError, ValueError):
    """An environment variable holds a value the pipeline cannot use."""


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (env.get(name) or default).strip().lower()
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    return value


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    value = _int(env, name, default, 0)
    if value > 65535:
        raise SettingsError(f"{name} must be a TCP port (0-65535), got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, allow_zero: bool = False) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise SettingsError(f"{name} must be a finite number {'>=' if allow_zero else '>'} 0, got {raw!r}")
    return value


def _security(raw: str, password: str) -> str:
    value = raw.strip().upper()
    if value not in ("PLAINTEXT", "SASL_PLAINTEXT"):
        raise SettingsError(f"STREAMS_KAFKA_SECURITY must be PLAINTEXT or SASL_PLAINTEXT, got {raw!r}")
    if value == "SASL_PLAINTEXT" and not password:
        raise SettingsError("STREAMS_KAFKA_SECURITY=SASL_PLAINTEXT needs STREAMS_KAFKA_PASSWORD")
    return value


def _web_tls(env: Mapping[str, str]) -> dict[str, str]:
    cert, key = (env.get("STREAMS_WEB_TLS_CERT") or "").strip(), (env.get("STREAMS_WEB_TLS_KEY") or "").strip()
    if bool(cert) != bool(key):
        raise SettingsError("STREAMS_WEB_TLS_CERT and STREAMS_WEB_TLS_KEY go together: set both (HTTPS) or neither")
    return {"web_tls_cert": cert, "web_tls_key": key}


def _ratio(env: Mapping[str, str], name: str, default: float) -> float:
    value = _float(env, name, default)
    if value > 1:
        raise SettingsError(f"{name} must be in (0, 1], got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be one of 1/0, true/false, yes/no, on/off; got {raw!r}")


def _regimes(raw: str) -> tuple[tuple[str, str], ...]:
    out = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        tenant, sep, regime = (x.strip() for x in part.partition("="))
        if not sep or regime not in ("opt_in", "opt_out") or not is_valid_tenant_name(tenant):
            raise SettingsError(f"STREAMS_TENANT_REGIMES: expected <tenant>=opt_in|opt_out, got {part!r}")
        if tenant in dict(out) and dict(out)[tenant] != regime:
            raise SettingsError(f"STREAMS_TENANT_REGIMES: tenant {tenant} given two regimes")
        if tenant not in dict(out):
            out.append((tenant, regime))
    return tuple(sorted(out))


def _tenants(raw: str) -> frozenset[str]:
    names = [t.strip() for t in raw.split(",") if t.strip()]
    if not names:
        raise SettingsError("STREAMS_TENANTS names no tenant")
    for name in names:
        problem = tenant_name_problem(name)
        if problem is not None:
            raise SettingsError(f"STREAMS_TENANTS: {problem}")
    return frozenset(names)


@dataclass(frozen=True)
class Settings:
    """Runtime configuration. Each field documents its environment variable."""

    #: STREAMS_KAFKA_BOOTSTRAP - broker bootstrap servers, host:port[,host:port].
    kafka_bootstrap: str = "127.0.0.1:9092"
    #: STREAMS_REDIS_URL - the store.
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: STREAMS_SCHEMAS_DIR - folder of the raw schemas, every version (``<type>/v<N>.avsc``; clean ones in ``clean/``).
    schemas_dir: Path = REPO_ROOT / "schemas"
    #: STREAMS_TENANTS - comma-separated names of onboarded tenants.
    tenants: frozenset[str] = frozenset({"acme", "globex"})
    #: STREAMS_APP_ID - Faust application id; also the consumer group id.
    app_id: str = "streams-pipeline"
    #: STREAMS_RAW_TOPIC - where producers publish.
    raw_topic: str = "events.raw"
    #: STREAMS_DLQ_TOPIC - where bad events go, with a reason code.
    dlq_topic: str = "events.dlq"
    #: STREAMS_QUARANTINE_TOPIC - sealed originals of rejected events a fix could rescue (for a redrive).
    quarantine_topic: str = "events.quarantine"
    #: STREAMS_QUARANTINE_RETENTION_MS - how long they are kept (and their quarantine keys live).
    quarantine_retention_ms: int = 7 * 24 * 3600 * 1000
    #: STREAMS_REQUESTS_TOPIC - privacy requests (consent, opt-out, erasure), keyed like raw events.
    requests_topic: str = "privacy.requests"
    #: STREAMS_TENANT_REGIMES - consent regime per tenant, "acme=opt_out,globex=opt_in";
    #: opt_in: nothing is processed before consent for the purpose; opt_out (default): until opt-out.
    tenant_regimes: tuple[tuple[str, str], ...] = ()
    #: STREAMS_PARTITIONS - partitions of the raw topic (the unit of scaling).
    partitions: int = 4
    #: STREAMS_TENANT_PARTITIONS - partitions of each tenant topic.
    tenant_partitions: int = 2
    #: STREAMS_REPLICATION - replication factor for topics the project creates.
    replication: int = 1
    #: STREAMS_MAX_EVENT_BYTES - larger raw events go to the DLQ as ``oversized``.
    max_event_bytes: int = 256 * 1024
    #: STREAMS_BATCH_SIZE - events the worker processes per batch.
    batch_size: int = 500
    #: STREAMS_BATCH_WITHIN - seconds to wait for a batch to fill.
    batch_within: float = 0.02
    #: STREAMS_FAIR_QUANTUM - while several tenants are active, the most events one tenant gives a
    #: batch of the tenant raw consumer (streams.ingest.fairness); 0: batch_size / 5.
    fair_quantum: int = 0
    #: STREAMS_WORKER_PROCESSES - worker processes ``streams worker`` runs on this machine (one per core).
    worker_processes: int = 1
    #: STREAMS_WEB_PORT - the Faust worker's HTTP port (health, /metrics and the HTTP API).
    web_port: int = 6066
    #: STREAMS_WEB_ENABLED - 0 to run the worker without its HTTP server.
    web_enabled: bool = True
    #: STREAMS_WEB_HOST - the address the HTTP server binds (loopback; 0.0.0.0 only behind a network you trust).
    web_host: str = "127.0.0.1"
    #: STREAMS_WEB_TLS_CERT / STREAMS_WEB_TLS_KEY - PEM certificate chain and key: the server speaks HTTPS.
    web_tls_cert: str = ""
    web_tls_key: str = ""
    # Bounding denied and excessive API calls (streams.api.limits; 429 with Retry-After). Buckets hold
    # two seconds of their rate; 0 turns a limit off.
    #: STREAMS_API_RATE_PER_KEY - requests per second of one API key (each key its own bucket).
    api_rate_per_key: float = 100.0
    #: STREAMS_API_DENIED_RATE_PER_KEY - denied (401/403) requests per second of one key id; beyond it every
    #: request of the key id is refused before it reaches Redis.
    api_denied_rate_per_key: float = 10.0
    #: STREAMS_API_RATE_PER_ADDRESS - denied requests per second of one client address (IPv6: /64); beyond it
    #: the address's requests without a recently authenticated key are refused.
    api_rate_per_address: float = 10.0
    #: STREAMS_API_DENIAL_AUDIT_WINDOW - seconds per aggregated denial audit record (one per who and what).
    api_denial_audit_window: float = 10.0
    #: STREAMS_DATA_DIR - the worker's local state (Faust tables).
    data_dir: Path = REPO_ROOT / ".stack" / "worker"
    #: STREAMS_STACK_DIR - the local broker's and Redis' files (``streams stack``).
    stack_dir: Path = REPO_ROOT / ".stack"
    #: STREAMS_MASTER_KEY_FILE - the local key provider's master key (created on first run, mode 0600).
    master_key_file: Path = REPO_ROOT / ".stack" / "keys" / "master.key"
    #: STREAMS_AUDIT_TOPIC - the append-only, hash-chained audit trail.
    audit_topic: str = "audit"
    #: STREAMS_JAR_CACHE - where Maven puts Kafka's jars for the local stack (shared by checkouts).
    jar_cache: Path = Path.home() / ".cache" / "streams"
    #: STREAMS_KAFKA_VERSION - Apache Kafka release the local stack runs.
    kafka_version: str = "4.1.2"
    #: STREAMS_LOG_LEVEL - worker log level.
    log_level: str = "INFO"
    #: STREAMS_LOG_FORMAT - "text" (default) or "json": one JSON object a line, for a log shipper.
    log_format: str = "text"
    #: STREAMS_SINK_RETRY_MAX_SECONDS - cap of the back-off while a sink is down.
    sink_retry_max_seconds: float = 5.0
    # How soon erased data leaves the broker's disk. Kafka never compacts or deletes the
    # active segment, and deletes files only ``file.delete.delay.ms`` after it let them go.
    #: STREAMS_TENANT_RETENTION_MS - how long a tenant topic keeps clean events (compact,delete).
    tenant_retention_ms: int = 30 * 24 * 3600 * 1000
    #: STREAMS_SEGMENT_MS - segment roll time of events.raw and the tenant topics.
    segment_ms: int = 3600 * 1000
    #: STREAMS_MAX_COMPACTION_LAG_MS - a tombstoned record is compacted away within this time.
    max_compaction_lag_ms: int = 6 * 3600 * 1000
    #: STREAMS_MIN_CLEANABLE_DIRTY_RATIO - tenant topics: dirty share that triggers compaction.
    min_cleanable_dirty_ratio: float = 0.1
    #: STREAMS_TOMBSTONE_RETENTION_MS - how long tenant consumers can still see a tombstone.
    tombstone_retention_ms: int = 24 * 3600 * 1000
    #: STREAMS_FILE_DELETE_DELAY_MS - broker's delay before removing a deleted segment file.
    file_delete_delay_ms: int = 60 * 1000
    #: STREAMS_RAW_PRUNE_INTERVAL - seconds between deletions of processed records from events.raw
    #: (0 disables: raw events then stay for the topic's retention).
    raw_prune_interval: float = 5.0
    #: STREAMS_SESSION_TIMEOUT - seconds without a heartbeat before the group gives a dead
    #: worker's partitions to the others (Faust's default is 60 s; failover waits this long).
    session_timeout: float = 15.0
    # The secure broker (DESIGN decision 8): SASL/SCRAM-SHA-512 and ACLs. PLAINTEXT for the demo.
    #: STREAMS_KAFKA_SECURITY - PLAINTEXT, or SASL_PLAINTEXT (SCRAM-SHA-512 with the user below).
    kafka_security: str = "PLAINTEXT"
    #: STREAMS_KAFKA_USERNAME - the pipeline's and operator's SCRAM user (a super user of the broker).
    kafka_username: str = "admin"
    #: STREAMS_KAFKA_PASSWORD - its password (required with SASL_PLAINTEXT; never logged).
    kafka_password: str = field(default="", repr=False)
    #: STREAMS_KAFKA_REAUTH_MS - the secure broker's ``connections.max.reauth.ms``: a client must
    #: authenticate again within this time, so a rotated or deleted credential ends open sessions.
    kafka_reauth_ms: int = 300_000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Build settings from ``env`` (default ``os.environ``); raises SettingsError."""
        env = os.environ if env is None else env
        d = cls()
        stack_dir = Path(env.get("STREAMS_STACK_DIR") or d.stack_dir)
        return cls(
            kafka_bootstrap=env.get("STREAMS_KAFKA_BOOTSTRAP") or d.kafka_bootstrap,
            redis_url=env.get("STREAMS_REDIS_URL") or d.redis_url,
            schemas_dir=Path(env.get("STREAMS_SCHEMAS_DIR") or d.schemas_dir),
            tenants=_tenants(env["STREAMS_TENANTS"]) if env.get("STREAMS_TENANTS") else d.tenants,
            app_id=env.get("STREAMS_APP_ID") or d.app_id,
            raw_topic=env.get("STREAMS_RAW_TOPIC") or d.raw_topic,
            dlq_topic=env.get("STREAMS_DLQ_TOPIC") or d.dlq_topic,
            quarantine_topic=env.get("STREAMS_QUARANTINE_TOPIC") or d.quarantine_topic,
            quarantine_retention_ms=_int(env, "STREAMS_QUARANTINE_RETENTION_MS", d.quarantine_retention_ms,
                                         3600 * 1000),
            requests_topic=env.get("STREAMS_REQUESTS_TOPIC") or d.requests_topic,
            tenant_regimes=_regimes(env.get("STREAMS_TENANT_REGIMES") or ""),
            partitions=_int(env, "STREAMS_PARTITIONS", d.partitions, 1),
            tenant_partitions=_int(env, "STREAMS_TENANT_PARTITIONS", d.tenant_partitions, 1),
            replication=_int(env, "STREAMS_REPLICATION", d.replication, 1),
            max_event_bytes=_int(env, "STREAMS_MAX_EVENT_BYTES", d.max_event_bytes, 64),
            batch_size=_int(env, "STREAMS_BATCH_SIZE", d.batch_size, 1),
            batch_within=_float(env, "STREAMS_BATCH_WITHIN", d.batch_within),
            fair_quantum=_int(env, "STREAMS_FAIR_QUANTUM", d.fair_quantum, 0),
            worker_processes=_int(env, "STREAMS_WORKER_PROCESSES", d.worker_processes, 1),
            web_port=_port(env, "STREAMS_WEB_PORT", d.web_port),
            web_enabled=_bool(env, "STREAMS_WEB_ENABLED", d.web_enabled),
            web_host=(env.get("STREAMS_WEB_HOST") or d.web_host).strip(),
            **_web_tls(env),
            api_rate_per_key=_float(env, "STREAMS_API_RATE_PER_KEY", d.api_rate_per_key, allow_zero=True),
            api_denied_rate_per_key=_float(env, "STREAMS_API_DENIED_RATE_PER_KEY", d.api_denied_rate_per_key,
                                           allow_zero=True),
            api_rate_per_address=_float(env, "STREAMS_API_RATE_PER_ADDRESS", d.api_rate_per_address, allow_zero=True),
            api_denial_audit_window=_float(env, "STREAMS_API_DENIAL_AUDIT_WINDOW", d.api_denial_audit_window),
            data_dir=Path(env.get("STREAMS_DATA_DIR") or stack_dir / "worker"),
            stack_dir=stack_dir,
            master_key_file=Path(env.get("STREAMS_MASTER_KEY_FILE") or stack_dir / "keys" / "master.key"),
            audit_topic=env.get("STREAMS_AUDIT_TOPIC") or d.audit_topic,
            jar_cache=Path(env.get("STREAMS_JAR_CACHE") or d.jar_cache),
            kafka_version=env.get("STREAMS_KAFKA_VERSION") or d.kafka_version,
            log_level=(env.get("STREAMS_LOG_LEVEL") or d.log_level).upper(),
            log_format=_choice(env, "STREAMS_LOG_FORMAT", d.log_format, ("text", "json")),
            sink_retry_max_seconds=_float(env, "STREAMS_SINK_RETRY_MAX_SECONDS", d.sink_retry_max_seconds),
            tenant_retention_ms=_int(env, "STREAMS_TENANT_RETENTION_MS", d.tenant_retention_ms, 1000),
            segment_ms=_int(env, "STREAMS_SEGMENT_MS", d.segment_ms, 100),
            max_compaction_lag_ms=_int(env, "STREAMS_MAX_COMPACTION_LAG_MS", d.max_compaction_lag_ms, 100),
            min_cleanable_dirty_ratio=_ratio(env, "STREAMS_MIN_CLEANABLE_DIRTY_RATIO", d.min_cleanable_dirty_ratio),
            tombstone_retention_ms=_int(env, "STREAMS_TOMBSTONE_RETENTION_MS", d.tombstone_retention_ms, 0),
            file_delete_delay_ms=_int(env, "STREAMS_FILE_DELETE_DELAY_MS", d.file_delete_delay_ms, 0),
            raw_prune_interval=_float(env, "STREAMS_RAW_PRUNE_INTERVAL", d.raw_prune_interval, allow_zero=True),
            session_timeout=_float(env, "STREAMS_SESSION_TIMEOUT", d.session_timeout),
            kafka_security=_security(env.get("STREAMS_KAFKA_SECURITY") or d.kafka_security,
                                     env.get("STREAMS_KAFKA_PASSWORD") or ""),
            kafka_username=env.get("STREAMS_KAFKA_USERNAME") or d.kafka_username,
            kafka_password=env.get("STREAMS_KAFKA_PASSWORD") or d.kafka_password,
            kafka_reauth_ms=_int(env, "STREAMS_KAFKA_REAUTH_MS", d.kafka_reauth_ms, 1000),
        )

    @property
    def kafka_secure(self) -> bool:
        return self.kafka_security == "SASL_PLAINTEXT"

    def kafka(self) -> dict[str, str]:
        """Connection settings for any librdkafka client; ``streams.connections`` adds each client's part."""
        if self.kafka_secure:
            return sasl_config(self.kafka_bootstrap, self.kafka_username, self.kafka_password)
        return {"bootstrap.servers": self.kafka_bootstrap}

    def regime_of(self, tenant: str) -> str:
        return dict(self.tenant_regimes).get(tenant, "opt_out")

    def tenant_topic(self, tenant: str) -> str:
        """Name of a tenant's clean stream; ACLs later grant the ``tenant.<t>.`` prefix."""
        return f"tenant.{tenant}.events"

    def tenant_raw_topic(self, tenant: str) -> str:
        """A tenant's own raw input: only its producer principal may write it (a broker ACL), so
        the topic an event arrived on says which tenant sent it. Outside ``tenant.<t>.``, so the
        tenant's consumer principal (which reads that prefix) cannot read raw PII."""
        return f"{self.raw_topic}.{tenant}"

    def tenant_of_raw_topic(self, topic: str) -> str | None:
        """The tenant whose raw input ``topic`` is; None for the shared raw topic (pipeline
        producers, trusted to name the tenant) and anything else."""
        prefix = self.raw_topic + "."
        return topic[len(prefix):] if topic.startswith(prefix) and len(topic) > len(prefix) else None


def to_env(settings: Settings) -> dict[str, str]:
    """The STREAMS_* variables that make ``Settings.from_env`` give back ``settings`` (to start
    a worker process with exactly these settings)."""
    env: dict[str, str] = {}
    for f in fields(Settings):
        value = getattr(settings, f.name)
        if isinstance(value, frozenset):
            text = ",".join(sorted(value))
        elif isinstance(value, tuple):
            text = ",".join(f"{k}={v}" for k, v in value)
        elif isinstance(value, bool):
            text = "1" if value else "0"
        else:
            text = str(value)
        env["STREAMS_" + f.name.upper()] = text
    return env


def env_var_names() -> list[str]:
    """Every environment variable the settings read (the compose test checks against it)."""
    names = []
    for f in fields(Settings):
        names.append("STREAMS_" + f.name.upper())
    return names
