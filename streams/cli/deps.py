"""The CLI's dependencies (Kafka, Redis, the audit trail): a quick probe before a command runs, and
the translation of their clients' errors into ``Unreachable``.

A probe costs one TCP connection and one metadata request or PING, and answers
in at most ``PROBE_TIMEOUT`` seconds (the clients themselves wait 30 s or retry
for ever when a broker is down). Probing before the command also means a
command that cannot reach what it needs changes nothing: it stops before its
first write.
"""

from __future__ import annotations

import logging
import socket
from typing import Iterable
from urllib.parse import urlsplit, urlunsplit

from streams.cli.errors import Unreachable, UsageError
from streams.settings import Settings

#: Seconds the probe of one dependency may take.
PROBE_TIMEOUT = 5.0

KAFKA = "kafka"
REDIS = "redis"
AUDIT = "audit"  # the audit topic, on Kafka

#: librdkafka's log lines ("FAIL ... Connection refused") are noise for a command line: the error
#: reaches the user as one line through the exceptions. This logger swallows them.
_quiet = logging.getLogger("streams.cli.kafka")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


def redacted(url: str) -> str:
    """``url`` without its password (redis://user:secret@host -> redis://user:***@host)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<unparsable URL>"


def _kafka_settings(s: Settings) -> str:
    names = "STREAMS_KAFKA_BOOTSTRAP"
    if s.kafka_secure:
        names += ", STREAMS_KAFKA_USERNAME and STREAMS_KAFKA_PASSWORD"
    return names


def kafka_unreachable(s: Settings, detail: str) -> Unreachable:
    return Unreachable("Kafka", s.kafka_bootstrap, _kafka_settings(s), detail,
                       "`streams stack status` shows whether the local one runs")


def redis_unreachable(s: Settings, detail: str) -> Unreachable:
    return Unreachable("Redis", redacted(s.redis_url), "STREAMS_REDIS_URL", detail,
                       "`streams stack status` shows whether the local one runs")


def audit_unreachable(s: Settings, detail: str) -> Unreachable:
    return Unreachable("the audit trail", f"topic {s.audit_topic} on {s.kafka_bootstrap}",
                       "STREAMS_AUDIT_TOPIC and " + _kafka_settings(s), detail,
                       "`streams topics create` makes a missing one")


def _hosts(bootstrap: str) -> list[tuple[str, int]]:
    out = []
    for part in bootstrap.split(","):
        part = part.strip()
        if "://" in part:
            part = part.split("://", 1)[1]
        host, sep, port = part.rpartition(":")
        if not sep or not port.isdigit():
            raise UsageError(f"STREAMS_KAFKA_BOOTSTRAP: expected host:port[,host:port], got {part!r}")
        out.append((host.strip("[]"), int(port)))
    return out


def probe_kafka(s: Settings, topics: Iterable[str] = (), timeout: float = PROBE_TIMEOUT) -> None:
    """Raise ``Unreachable`` unless a broker answers a metadata request within ``timeout`` s.

    ``topics``: topics that must exist as well (the audit topic for commands that audit).
    """
    errors = []
    for host, port in _hosts(s.kafka_bootstrap):
        try:
            socket.create_connection((host, port), timeout=min(timeout, 3.0)).close()
            break
        except OSError as exc:
            errors.append(f"{host}:{port}: {exc.strerror or exc}")
    else:
        raise kafka_unreachable(s, "; ".join(errors))

    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    from streams.connections import admin_config

    seen: list = []  # errors librdkafka reports meanwhile: a refused login says more than the timeout
    admin = AdminClient(admin_config(s.kafka(), {"logger": _quiet, "error_cb": seen.append,
                                                 "socket.connection.setup.timeout.ms": int(timeout * 1000)}))
    try:
        md = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        admin.poll(0.2)  # serves error_cb with what happened meanwhile
        auth = [e for e in seen if e.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED)]
        if auth:
            raise kafka_unreachable(s, f"the broker refused the login: {auth[-1].str()}") from None
        cause = seen[-1].str() if seen else _kafka_reason(exc)
        raise kafka_unreachable(s, f"no answer to a metadata request within {timeout:.0f} s: {cause}") from None
    for topic in topics:
        if topic not in md.topics:
            if topic == s.audit_topic:
                raise audit_unreachable(s, "the topic does not exist")
            raise UsageError(f"topic {topic} does not exist (`streams topics create` makes the project's topics)")


def probe_redis(s: Settings, timeout: float = PROBE_TIMEOUT) -> None:
    """Raise ``Unreachable`` unless Redis answers PING within ``timeout`` s."""
    import redis

    from streams.connections import redis_probe_client

    try:
        client = redis_probe_client(s, timeout)
    except ValueError as exc:
        raise UsageError(f"STREAMS_REDIS_URL: {exc}") from None
    try:
        client.ping()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise redis_unreachable(s, _redis_reason(exc)) from None
    except redis.exceptions.ResponseError as exc:
        raise redis_unreachable(s, f"refused PING: {exc}") from None
    finally:
        client.close()


def probe(s: Settings, needs: Iterable[str]) -> None:
    """Probe each dependency in ``needs`` (``KAFKA``, ``REDIS``, ``AUDIT``), in that order (what the
    command reads first comes first); the first missing one raises."""
    needs = list(dict.fromkeys(needs))
    kafka_done = False
    for need in needs:
        if need == REDIS:
            probe_redis(s)
        elif not kafka_done:  # KAFKA or AUDIT: one probe covers both
            probe_kafka(s, [s.audit_topic] if AUDIT in needs else [])
            kafka_done = True


def _redis_reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    if "Connection refused" in text:
        return "connection refused"
    if isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__ or "timed out" in text:
        return "no answer (timed out)"
    return text.rstrip(".")


def _kafka_reason(exc: Exception) -> str:
    err = exc.args[0] if exc.args else None
    text = err.str() if hasattr(err, "str") else str(exc)
    return text.rstrip(".")


#: librdkafka error names that mean "the broker cannot be reached or did not answer".
_KAFKA_UNREACHABLE = {"_TRANSPORT", "_ALL_BROKERS_DOWN", "_TIMED_OUT", "_MSG_TIMED_OUT", "_RESOLVE",
                      "BROKER_NOT_AVAILABLE", "NETWORK_EXCEPTION", "REQUEST_TIMED_OUT", "_AUTHENTICATION",
                      "SASL_AUTHENTICATION_FAILED"}


def translate(exc: BaseException, s: Settings) -> Unreachable | None:
    """The ``Unreachable`` that an error of a Kafka, Redis or audit client means, or None."""
    try:
        import redis

        if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
            return redis_unreachable(s, _redis_reason(exc))
    except ImportError:  # pragma: no cover - redis is a dependency
        pass
    from confluent_kafka import KafkaException

    if isinstance(exc, KafkaException):
        err = exc.args[0] if exc.args else None
        if hasattr(err, "name") and err.name() in _KAFKA_UNREACHABLE:
            return kafka_unreachable(s, _kafka_reason(exc))
        return None
    from streams.audit.exceptions import AuditError

    if isinstance(exc, AuditError):
        return audit_unreachable(s, str(exc))
    from streams.ops.exceptions import OpsError

    if isinstance(exc, OpsError) and "cannot reach the broker" in str(exc):
        return kafka_unreachable(s, str(exc))
    return None
