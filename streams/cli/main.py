"""``streams``: the one command line of the project. ``streams <command> --help`` explains each command.

Each command is a small function that parses nothing itself: argparse does,
and the function calls into the package. Before it runs, ``main`` probes what
the command needs (Kafka, Redis, the audit trail: ``needs`` in the parser) and
afterwards turns every error it knows into one line on stderr and an exit
status (``streams.cli.errors`` lists them), never a traceback. Nothing prints
event payloads except ``tail`` and ``store``, whose job it is to show clean
events.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, Union

from streams.settings import Settings, SettingsError

# Defined in their own modules: `python -m streams.cli.main` runs this file as
# __main__, and a class defined here would then exist twice.
from streams.cli import deps  # noqa: E402
from streams.cli.errors import (  # noqa: E402
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    CliError,
    UsageError,
    exit_codes_help,
)
from streams.cli.text import plural  # noqa: E402

EPILOG = """configuration comes from STREAMS_* environment variables (see README.md,
"Configuration"); defaults talk to the local stack that `streams stack up` runs."""


#: What a command needs reachable (``deps.KAFKA``, ``REDIS``, ``AUDIT``), or a function of its arguments giving it.
Needs = Union[tuple[str, ...], Callable[[argparse.Namespace], tuple[str, ...]]]


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise UsageError(str(exc)) from None


def _ready(args: argparse.Namespace, s: Settings) -> None:
    """Probe what the command needs (``needs`` in the parser), once, in a few seconds at most.

    Each command calls it after checking its arguments and before its first
    read or write: a bad argument is status 2 whatever is down, and a command
    whose Kafka, Redis or audit trail is down stops with status 3 having
    changed nothing.
    """
    if getattr(args, "probed", False):
        return
    needs = args.needs(args) if callable(args.needs) else args.needs
    deps.probe(s, needs)
    args.probed = True


# ---------------------------------------------------------------- stack / topics

def cmd_stack(args: argparse.Namespace) -> int:
    from streams.ops.localstack import LocalStack
    from streams.ops.topics import ensure_topics

    s = _settings()
    stack = LocalStack(s)
    if args.action == "up":
        print(f"starting Redis ({s.redis_url}) and Kafka {s.kafka_version} ({s.kafka_bootstrap}) in {s.stack_dir} ...",
              flush=True)
        stack.up()
        for name, state in ensure_topics(s).items():
            print(f"  topic {name}: {state}")
        print("stack is up")
    elif args.action == "down":
        stack.down()
        print("stack stopped")
    elif args.action == "wipe":
        stack.wipe()
        print(f"stack stopped and its data under {s.stack_dir} deleted")
    else:
        for name, running in stack.status().items():
            print(f"{name}: {'running' if running else 'stopped'}")
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from streams.ops.topics import all_topics, ensure_topics

    s = _settings()
    if args.action == "create":
        _ready(args, s)
        for name, state in ensure_topics(s).items():
            print(f"{name}: {state}")
    else:
        for spec in all_topics(s):
            cfg = " ".join(f"{k}={v}" for k, v in spec.config.items())
            print(f"{spec.name}  partitions={spec.partitions}  {cfg}\n    {spec.purpose}")
    return 0


# ---------------------------------------------------------------- worker

def _check_web_port(port: int, setting: str) -> None:
    """Refuse to start when another process (a second worker, say) listens on the HTTP port.

    Faust would otherwise start, fail to bind deep inside its web server and
    crash with a traceback. Not a silent move to the next free port: Prometheus
    and load balancers are configured with the port, and a worker that answers
    elsewhere looks dead to them. The check binds as aiohttp does (0.0.0.0,
    SO_REUSEADDR); a race with a process that takes the port after it remains.
    """
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError as exc:
            raise UsageError(f"web port {port} is taken ({exc.strerror}; another worker on this machine?): "
                             f"set {setting} to a free port, or STREAMS_WEB_ENABLED=0 to run without "
                             "the HTTP server") from None


def cmd_worker(args: argparse.Namespace) -> int:
    import faust

    from streams.app import create_app
    from streams.ops.topics import ensure_topics

    s = _settings()
    if args.web_port is not None:
        s = dataclasses.replace(s, web_port=args.web_port)
    if s.web_enabled:
        _check_web_port(s.web_port, "--web-port" if args.web_port is not None else "STREAMS_WEB_PORT")
    _ready(args, s)
    logging.basicConfig(level=s.log_level, format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")
    if not args.no_create_topics:
        ensure_topics(s)
    app = create_app(s)
    worker = faust.Worker(app, loglevel=s.log_level.lower(), quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
    return 0


# ---------------------------------------------------------------- publish

def _read_events(path: str) -> list[dict[str, Any]]:
    """JSON Lines, a JSON array, or an Avro container file (.avro)."""
    if path.endswith(".avro"):
        import fastavro

        with open(path, "rb") as f:
            reader = fastavro.reader(f)
            name = reader.writer_schema["name"]
            return [{"schema": name, **rec} for rec in reader]
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    stripped = text.lstrip()
    if stripped.startswith("["):
        data = json.loads(text)
        if not all(isinstance(e, dict) for e in data):
            raise UsageError(f"{path}: the JSON array must hold objects")
        return data
    events = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise UsageError(f"{path}:{n}: not JSON ({exc.msg})") from None
    return events


def cmd_publish(args: argparse.Namespace) -> int:
    from streams.ingest.producer import EventProducer, encode_event, event_key
    from streams.schema.exceptions import SchemaError
    from streams.schema.registry import SchemaRegistry

    s = _settings()
    registry = SchemaRegistry.load_dir(s.schemas_dir)
    try:
        events = _read_events(args.file)
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read {args.file}: {exc}") from None
    # Encode everything first: a bad event in the file publishes nothing (a bad request changes nothing).
    encoded = []
    for i, e in enumerate(events, 1):
        try:
            encoded.append((event_key(e), encode_event(registry, e, args.format)))
        except SchemaError as exc:
            raise UsageError(f"event {i}: {exc}; nothing was published") from None
    _ready(args, s)
    producer = EventProducer(s.kafka(), s.raw_topic, registry)
    for key, value in encoded:
        producer.send_raw(key, value)
    producer.flush()
    print(f"published {plural(producer.acked, 'event')} to {s.raw_topic} as {args.format}"
          + (f", {producer.failed} failed" if producer.failed else ""))
    return 1 if producer.failed else 0


# ---------------------------------------------------------------- tail / dlq

def _consume(s: Settings, topic: str, on_record: Callable[[Any], None], args: argparse.Namespace) -> int:
    import uuid

    from confluent_kafka import Consumer, KafkaError

    _ready(args, s)
    consumer = Consumer({
        **s.kafka(),
        "group.id": f"streams-cli-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest" if args.from_beginning else "latest",
        "logger": deps._quiet,
    })
    consumer.subscribe([topic])
    seen = 0
    deadline = time.monotonic() + args.timeout if args.timeout else None
    try:
        while args.max is None or seen < args.max:
            if deadline and time.monotonic() > deadline:
                break
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise UsageError(f"topic {topic} does not exist")
                continue
            on_record(msg)
            seen += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    from streams.consumer.clean_decoder import CleanDecoder
    from streams.tenancy.names import validate_tenant_name

    s = _settings()
    tenant = validate_tenant_name(args.tenant)
    decoder = CleanDecoder.from_dir(s.schemas_dir / "clean")

    def show(msg: Any) -> None:
        # Flushed per record: a follower (`| grep`, `| head`) sees each one as it comes.
        if msg.value() is None:
            print(json.dumps({"key": (msg.key() or b"").decode(), "tombstone": True}), flush=True)
            return
        name, event = decoder.decode(msg.value())
        print(json.dumps({"key": (msg.key() or b"").decode(), "schema": name, "partition": msg.partition(),
                          "offset": msg.offset(), "event": event}, default=str), flush=True)

    return _consume(s, s.tenant_topic(tenant), show, args)


def cmd_dlq(args: argparse.Namespace) -> int:
    s = _settings()
    wanted: set[str] | None = None
    if args.payload or args.event_id:
        # Match a record the operator holds: its fingerprints under every live DLQ key version.
        import redis

        from streams.dlq.keys import DlqKeyring
        from streams.privacy.keys import LocalKeyFileProvider

        ring = DlqKeyring(redis.Redis.from_url(s.redis_url, socket_timeout=5),
                          LocalKeyFileProvider(s.master_key_file, create=False), s.dlq_topic)
        scopes = [args.tenant, None] if args.tenant else [None]
        wanted = set()
        for scope in scopes:
            if args.payload:
                wanted.update(ring.fingerprints("payload", scope, Path(args.payload).read_bytes()))
            if args.event_id:
                wanted.update(ring.fingerprints("event_id", scope, args.event_id.encode()))

    def show(msg: Any) -> None:
        doc = json.loads(msg.value())
        if args.reason and doc.get("reason") != args.reason:
            return
        if wanted is not None and not wanted & {doc.get("payload_fingerprint"), doc.get("event_ref")}:
            return
        if args.json:
            print(json.dumps(doc), flush=True)
        else:
            src = doc.get("source", {})
            where = f"{src.get('topic')}[{src.get('partition')}]@{src.get('offset')}"
            extra = f" field={doc['field']}" if doc.get("field") else ""
            extra += f" subject={doc['subject']}" if doc.get("subject") else ""
            print(f"{doc['reason']:<17} {where:<22} tenant={doc.get('tenant') or '-'}{extra}  {doc.get('detail')}",
                  flush=True)

    return _consume(s, s.dlq_topic, show, args)


def cmd_dlq_resolve(args: argparse.Namespace) -> int:
    import redis

    from streams.audit.keys import open_audit_log
    from streams.dlq.subjects import DlqSubjects, ResolveRefused, resolve_audited
    from streams.privacy.keys import LocalKeyFileProvider

    s = _settings()
    _ready(args, s)
    tenant = _onboarded_tenant(s, args.tenant, args)
    subjects = DlqSubjects(redis.Redis.from_url(s.redis_url, socket_timeout=5),
                           LocalKeyFileProvider(s.master_key_file, create=False))
    actor = f"cli:{args.actor or _user()}"
    with open_audit_log(s, actor, _writer()) as audit:
        try:
            subject = resolve_audited(subjects, audit, tenant, args.pseudonym, actor, args.reason)
        except ResolveRefused as exc:
            raise UsageError(str(exc)) from None
    print(subject)
    return 0


# ---------------------------------------------------------------- store

def cmd_store(args: argparse.Namespace) -> int:
    from streams.sinks.store import StoreReader
    from streams.tenancy.names import validate_tenant_name

    s = _settings()
    tenant = validate_tenant_name(args.tenant)
    _ready(args, s)
    reader = StoreReader.from_url(s.redis_url)
    if args.event_id:
        doc = reader.get(tenant, args.event_id)
        if doc is None:
            raise UsageError(f"no event {args.event_id} for tenant {tenant}")
        print(json.dumps(doc, indent=2))
        return 0
    if args.count:
        print(reader.count(tenant, args.type))
        return 0
    if args.subject:
        docs = reader.by_subject(tenant, args.subject, limit=args.limit, offset=args.offset)
    elif args.type:
        docs = reader.by_type(tenant, args.type, args.since, args.until, limit=args.limit, offset=args.offset)
    else:
        docs = reader.by_time(tenant, args.since, args.until, limit=args.limit, offset=args.offset)
    for d in docs:
        print(json.dumps(d))
    return 0


# ---------------------------------------------------------------- schemas

def cmd_schemas(args: argparse.Namespace) -> int:
    from streams.schema.clean import derive_clean_source, render, write_clean_dir
    from streams.schema.registry import SchemaRegistry

    s = _settings()
    raw = SchemaRegistry.load_dir(s.schemas_dir)
    clean_dir = s.schemas_dir / "clean"
    if args.action == "derive":
        for p in write_clean_dir(raw, clean_dir):
            print(f"wrote {p}")
        return 0
    if args.action == "lint":
        import json as _json

        from streams.privacy.lint import lint_schema

        findings = [f for e in raw for f in lint_schema(_json.loads(e.path.read_text()) if e.path else e.source,
                                                        e.path.name if e.path else e.fullname)]
        for f in findings:
            print(f, file=sys.stderr)
        if findings:
            return 1
        print(f"{plural(len(raw), 'schema')}: every PII-looking field is annotated")
        return 0
    if args.action == "check":
        stale = [e.event_type for e in raw
                 if not (clean_dir / f"{e.event_type}.avsc").exists()
                 or (clean_dir / f"{e.event_type}.avsc").read_text() != render(derive_clean_source(e))]
        if stale:
            print(f"clean schemas out of date: {', '.join(stale)}; run `streams schemas derive`", file=sys.stderr)
            return 1
        print("clean schemas are up to date")
        return 0
    for e in raw:
        print(f"{e.event_type:<18} {e.fullname:<40} fingerprint={e.fingerprint_hex}")
    return 0


# ---------------------------------------------------------------- privacy

def _onboarded_tenant(s: Settings, name: str, args: argparse.Namespace) -> str:
    from streams.tenancy.names import validate_tenant_name

    import redis

    from streams.tenancy.registry import TenantDirectory

    tenant = validate_tenant_name(name)
    _ready(args, s)
    known = TenantDirectory(s.tenants, dict(s.tenant_regimes), redis.Redis.from_url(s.redis_url, socket_timeout=5))
    if tenant not in known:
        raise UsageError(f"unknown tenant {tenant} (onboarded: {', '.join(known)})")
    return tenant


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def _writer() -> str:
    """The audit writer (signing identity) of this CLI process: its login, never the --actor claim."""
    from streams.audit.signing import writer_name

    return writer_name("cli", _user())


def cmd_detokenize(args: argparse.Namespace) -> int:
    import redis

    from streams.audit.keys import open_audit_log
    from streams.privacy.detokenize import Detokenizer, DetokenizeRefused
    from streams.privacy.keys import KeyStore, LocalKeyFileProvider
    from streams.privacy.pseudonyms import Pseudonymizer

    s = _settings()
    tenant = _onboarded_tenant(s, args.tenant, args)
    provider = LocalKeyFileProvider(s.master_key_file, create=False)
    client = redis.Redis.from_url(s.redis_url, socket_timeout=5)
    actor = f"cli:{args.actor or _user()}"
    with open_audit_log(s, actor, _writer(), client=client, provider=provider) as audit:
        d = Detokenizer(KeyStore(client, provider), audit, Pseudonymizer(client, provider))
        try:
            value = d.detokenize(tenant, args.subject, args.token, actor, args.reason)
        except DetokenizeRefused as exc:
            raise UsageError(str(exc)) from None
    print(value)
    return 0


def cmd_privacy(args: argparse.Namespace) -> int:
    import redis

    from streams.consent.exceptions import InvalidRequest
    from streams.consent.requests import new_request
    from streams.consent.store import ConsentStore

    s = _settings()
    if args.action == "file" and (not args.subject or not args.type):
        raise UsageError("file needs --type and --subject")
    if args.action == "status" and not args.request_id:
        raise UsageError("status needs --request-id")
    tenant = _onboarded_tenant(s, args.tenant, args)
    consent = ConsentStore(redis.Redis.from_url(s.redis_url, socket_timeout=5))
    if args.action == "file":
        try:
            req = new_request(args.type, tenant, args.subject, f"cli:{args.actor or _user()}", args.purpose,
                              args.reason or "")
        except InvalidRequest as exc:
            raise UsageError(str(exc)) from None
        from confluent_kafka import Producer

        # Not idempotent: acquiring a producer id costs up to a second, and a duplicate of this one
        # record is harmless (requests are applied once per request id).
        p = Producer({**s.kafka(), "acks": "all",
                      "partitioner": "murmur2_random", "logger": deps._quiet})
        errors: list[Any] = []
        p.produce(s.requests_topic, req.to_json(), req.key, on_delivery=lambda err, _m: errors.append(err))
        if p.flush(30) or errors[0] is not None:
            raise deps.kafka_unreachable(s, "the request was not acknowledged by the broker: "
                                            f"{errors[0] if errors else 'timeout'}")
        print(req.request_id)
        if args.wait:
            deadline = time.monotonic() + args.wait
            while time.monotonic() < deadline:
                receipt = consent.receipt(tenant, req.request_id)
                if receipt and receipt.get("status") == "done":
                    print(json.dumps(receipt, indent=2))
                    return 0
                time.sleep(0.1)
            print(f"not done after {args.wait:.0f}s; `streams privacy status {tenant} {req.request_id}` "
                  "shows it when it is", file=sys.stderr)
            return 1
        return 0
    if args.action == "status":
        receipt = consent.receipt(tenant, args.request_id)
        if receipt is None:
            print(json.dumps({"request_id": args.request_id, "status": "pending or unknown"}))
            return 1
        print(json.dumps(receipt, indent=2))
        return 0
    from streams.consent.report import compliance_report

    print(json.dumps(compliance_report(redis.Redis.from_url(s.redis_url, socket_timeout=5), tenant), indent=2))
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    import redis

    from streams.privacy.keys import KeyStore, LocalKeyFileProvider

    from streams.audit.exceptions import AuditError
    from streams.audit.keys import open_audit_log

    s = _settings()
    tenant = _onboarded_tenant(s, args.tenant, args)
    store = KeyStore(redis.Redis.from_url(s.redis_url, socket_timeout=30),
                     LocalKeyFileProvider(s.master_key_file, create=False))
    if args.action == "show":
        print(f"tenant {tenant}: key version {store.tenant_key_version(tenant)}")
        return 0
    # The audit trail is opened first: when it cannot be written, no key is rotated.
    with open_audit_log(s, f"cli:{args.actor or _user()}", _writer()) as audit:
        report = store.rotate_tenant_key(tenant)
        try:
            audit.append("key.rotate", tenant, None, "tenant key rotated",
                         {"old_version": report.old_version, "new_version": report.new_version,
                          "rewrapped": report.rewrapped, "deleted_versions": report.deleted_versions})
        except AuditError as exc:
            raise deps.audit_unreachable(s, f"tenant {tenant}'s key was rotated to version {report.new_version}, "
                                            f"but its audit record was not written: {exc}") from None
    print(f"tenant {tenant}: key version {report.old_version} -> {report.new_version}, "
          f"{plural(report.rewrapped, 'subject key')} re-wrapped; earlier tokens stay reversible")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from streams.audit.cli import audit_command

    s = _settings()
    _ready(args, s)
    return audit_command(s, args.action, args.keys_action, keyring_file=args.keyring, trail=args.trail,
                         writer=args.writer, out_file=args.out, cli_writer=_writer(),
                         actor=f"cli:{args.actor or _user()}", out=sys.stdout)


# ---------------------------------------------------------------- tenants

def cmd_tenants(args: argparse.Namespace) -> int:
    from streams.audit.keys import open_audit_log
    from streams.tenancy.onboarding import build_service

    from streams.tenancy.names import validate_tenant_name

    quota = None
    if args.quota is not None:  # checked before anything is opened: a bad flag changes nothing
        from streams.tenancy.exceptions import OnboardingError
        from streams.tenancy.quotas import parse_quota

        if args.action != "create":
            raise UsageError("--quota goes with `tenants create`")
        try:
            quota = parse_quota(args.quota)
        except OnboardingError as exc:
            raise UsageError(str(exc)) from None
    s = _settings()
    # Every check before the audit trail or any store is opened: a refused command changes nothing.
    if args.action == "list":
        if args.name:
            raise UsageError("list takes no NAME (`streams tenants describe NAME` shows one)")
    else:
        if not args.name:
            raise UsageError(f"`tenants {args.action}` needs a tenant NAME")
        validate_tenant_name(args.name)
    roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    if args.action == "create":
        bad = [r for r in roles if r not in ("reader", "detokenizer", "privacy")]
        if bad or not roles:
            raise UsageError(f"--roles: unknown role {bad[0]!r} (reader, detokenizer, privacy); nothing was created"
                             if bad else "--roles names no role (reader, detokenizer, privacy); nothing was created")
    if args.action == "delete" and not args.yes:
        raise UsageError(f"not deleted: deleting erases every event, key and credential of {args.name}; "
                         "add --yes to confirm")
    _ready(args, s)
    actor = f"cli:{args.actor or _user()}"
    with open_audit_log(s, actor, _writer()) as audit:
        svc = build_service(s, actor, lambda: audit)
        if args.action == "list":
            print(json.dumps(svc.list(), indent=2))
            return 0
        if args.action == "create":
            result = svc.create(args.name, args.regime, roles, quota)
        elif args.action == "describe":
            result = svc.describe(args.name)
        elif args.action == "rotate-credentials":
            result = svc.rotate_credentials(args.name)
        else:  # delete, confirmed above
            result = svc.delete(args.name)
    if result.get("credentials"):
        print("credentials below are shown once; store them now (only hashes or salted verifiers are kept)",
              file=sys.stderr)
    print(json.dumps(result, indent=2))
    return 0


def cmd_principals(args: argparse.Namespace) -> int:
    from streams.audit.keys import open_audit_log
    from streams.tenancy.principals import build_principals

    s = _settings()
    if args.action != "list" and not args.role:
        raise UsageError(f"`principals {args.action}` needs a ROLE (privacy-officer, auditor)")
    _ready(args, s)
    actor = f"cli:{args.actor or _user()}"
    with open_audit_log(s, actor, _writer()) as audit:
        svc = build_principals(s, actor, audit)
        if args.action == "list":
            print(json.dumps(svc.list(), indent=2))
            return 0
        if not args.role:
            raise UsageError(f"`principals {args.action}` needs a ROLE (privacy-officer, auditor)")
        if args.action == "create":
            result = svc.create(args.role)
        elif args.action == "rotate":
            result = svc.rotate(args.role)
        else:
            result = svc.delete(args.role)
    if result.get("credentials"):
        print("credentials below are shown once; store them now (only salted verifiers or hashes are kept)",
              file=sys.stderr)
    print(json.dumps(result, indent=2))
    return 0


# ---------------------------------------------------------------- API keys

def cmd_apikeys(args: argparse.Namespace) -> int:
    import re

    import redis

    from streams.api.api_keys import MAX_LABEL, ApiKeyStore, Role
    from streams.audit.exceptions import AuditError
    from streams.audit.keys import open_audit_log
    from streams.tenancy.names import validate_tenant_name

    s = _settings()
    # Everything is checked before the audit trail is opened or anything is written.
    tenant: str | None = None
    if args.action == "create":
        if args.key_id:
            raise UsageError("create takes no KEY_ID (the key's id is made for it)")
        if not args.role:
            raise UsageError("create needs --role: operator, reader, detokenizer or privacy")
        role = Role(args.role)
        if role is Role.OPERATOR:
            if args.tenant:
                raise UsageError("operator keys belong to no tenant: leave out --tenant")
        else:
            if not args.tenant:
                raise UsageError(f"a {role.value} key belongs to one tenant: add --tenant NAME")
            tenant = _onboarded_tenant(s, args.tenant, args)
        if len(args.label) > MAX_LABEL or any(ord(c) < 32 or ord(c) == 127 for c in args.label):
            raise UsageError(f"--label: at most {MAX_LABEL} printable characters")
    elif args.action == "revoke":
        if not args.key_id:
            raise UsageError("revoke needs the KEY_ID (`streams apikeys list` shows them)")
        if args.role or args.tenant or args.label:
            raise UsageError("revoke takes only the KEY_ID")
        if not re.fullmatch(r"[0-9a-f]{12}", args.key_id):
            # Never echoed: it could be a whole token pasted by mistake.
            raise UsageError("KEY_ID is the key's id, 12 lowercase hex characters (`streams apikeys list` shows "
                             "them), not its token")
    else:  # list
        if args.key_id or args.role or args.label:
            raise UsageError("list takes only --tenant")
        tenant = validate_tenant_name(args.tenant) if args.tenant else None

    _ready(args, s)
    store = ApiKeyStore(redis.Redis.from_url(s.redis_url, socket_timeout=10, socket_connect_timeout=5))
    if args.action == "revoke":
        meta = store.get(args.key_id)
        if meta is None:
            raise UsageError(f"no API key {args.key_id} (`streams apikeys list` shows them)")
    actor = f"cli:{args.actor or _user()}"
    with open_audit_log(s, actor, _writer()) as audit:
        if args.action == "create":
            key_id, token = store.create(tenant, role, args.label)
            try:
                # The id and the role, never the token; no label either (free text, kept forever).
                audit.append("apikey.create", tenant, None, f"API key {key_id} created",
                             {"key_id": key_id, "role": role.value})
            except AuditError as exc:
                store.revoke(key_id)  # no key that the audit trail does not know of stays usable
                raise deps.audit_unreachable(s, f"the key was not kept: its creation could not be audited: {exc}") \
                    from None
            print("the token below is shown once; store it now (only its hash is kept)", file=sys.stderr)
            print(json.dumps({"key_id": key_id, "tenant": tenant, "role": role.value, "label": args.label,
                              "token": token}, indent=2))
            return 0
        if args.action == "revoke":
            revoked = store.revoke(meta["key_id"])  # unusable from here on, on every worker
            try:
                audit.append("apikey.revoke", meta["tenant"], None, f"API key {meta['key_id']} revoked",
                             {"key_id": meta["key_id"], "role": meta["role"], "existed": revoked})
            except AuditError as exc:
                raise deps.audit_unreachable(s, f"API key {meta['key_id']} is revoked, but the audit record was "
                                                f"not written: {exc}") from None
            print(json.dumps({**meta, "revoked": True}, indent=2))
            return 0
        keys = store.list(tenant)
        audit.append("apikey.list", tenant, None, "API keys listed", {"keys": len(keys)})
    print(json.dumps(keys, indent=2))  # metadata only: ApiKeyStore.list never returns hashes
    return 0


# ---------------------------------------------------------------- demo

def cmd_demo(args: argparse.Namespace) -> int:
    from streams.cli.demo import run_demo

    return run_demo(_settings(), keep_running=args.keep_running, events=args.events)


# ---------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="streams",
        description="Privacy-first multi-tenant event pipeline on Kafka: run the stack and workers, "
                    "publish events, read tenant streams, the DLQ and the store.",
        epilog=EPILOG + "\n\n" + exit_codes_help("the command ran and its outcome is negative (each command's "
                                                  "--help says when)"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    K, R, A = deps.KAFKA, deps.REDIS, deps.AUDIT

    def add(name: str, help: str, fn: Callable[[argparse.Namespace], int], desc: str | None = None, *,
            needs: Needs = (), exit1: str = ""):
        """``needs``: what main probes before ``fn`` runs (or a function of the arguments giving it);
        ``exit1``: when the command exits with status 1, for its --help."""
        sp = sub.add_parser(name, help=help, description=desc or help,
                            epilog=EPILOG + "\n\n" + exit_codes_help(exit1),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.set_defaults(fn=fn, needs=needs)
        return sp

    sp = add("stack", "run the local Kafka (KRaft) and Redis without Docker", cmd_stack,
             "Start, stop or inspect the local stack: Apache Kafka from Maven jars on Java 17 and Debian's "
             "redis-server with AOF on. `up` also creates the topics. Data lives under STREAMS_STACK_DIR.",
             exit1="`up` could not start a part (its log is named)")
    sp.add_argument("action", choices=["up", "down", "status", "wipe"],
                    help="up: start (idempotent); down: stop; status: show; wipe: stop and delete data")

    sp = add("topics", "create or list the project's topics", cmd_topics,
             "Topics are declared by the project (the broker does not auto-create). `create` is idempotent; "
             "`list` shows the declared topics and their settings (no broker needed).",
             needs=lambda a: (K,) if a.action == "create" else ())
    sp.add_argument("action", choices=["create", "list"])

    sp = add("worker", "start a pipeline worker (Faust)", cmd_worker,
             "Start one worker of the consumer group STREAMS_APP_ID. Run several to scale out: partitions of "
             "events.raw are shared among them. Stops cleanly on Ctrl-C / SIGTERM. Refuses to start (status "
             "2) when its web port is taken: give a second worker on one machine its own --web-port.",
             needs=(R, K))
    sp.add_argument("--web-port", type=int, help="HTTP port for /health, /ready, /metrics (default STREAMS_WEB_PORT)")
    sp.add_argument("--no-create-topics", action="store_true", help="do not create missing topics at start")

    sp = add("publish", "publish events from a file to events.raw", cmd_publish,
             "Publish events from FILE: JSON Lines or a JSON array of objects, each naming its schema in a "
             "'schema' member (e.g. \"customer_signup\"), or an Avro container file (.avro). Every event is "
             "checked before anything is sent: one bad event publishes nothing.",
             needs=(K,), exit1="some events were not acknowledged by the broker (the count is printed)")
    sp.add_argument("file", help="path, or - for standard input")
    sp.add_argument("--format", choices=["avro", "json"], default="avro",
                    help="wire format on events.raw (default avro: single-object encoding)")

    for name, helptext, fn in [("tail", "show a tenant's clean stream, decoded", cmd_tail),
                               ("dlq", "show DLQ entries with their reasons", cmd_dlq)]:
        sp = add(name, helptext, fn,
                 helptext[0].upper() + helptext[1:] + ", one line each, until --max records or --timeout "
                 "seconds (or Ctrl-C).", needs=(K,))
        if name == "tail":
            sp.add_argument("tenant")
        else:
            sp.add_argument("--reason", help="only this reason code")
            sp.add_argument("--json", action="store_true", help="print whole DLQ records as JSON")
            sp.add_argument("--payload", metavar="FILE",
                            help="only records of this raw payload (matched by its keyed fingerprint)")
            sp.add_argument("--event-id", help="only records of this event id (matched by its keyed fingerprint)")
            sp.add_argument("--tenant", help="with --payload/--event-id: the tenant the event was for")
        sp.add_argument("--from-beginning", action="store_true", help="start at the oldest retained record")
        sp.add_argument("--max", type=int, help="stop after this many records")
        sp.add_argument("--timeout", type=float, help="stop after this many seconds")

    sp = add("dlq-resolve", "show the subject id behind a DLQ record's pseudonym, for triage; audited",
             cmd_dlq_resolve,
             "DLQ records name subjects only by pseudonym. This prints the subject id behind one, after writing "
             "who asked and why to the audit trail. Refused once the subject is erased (or no DLQ record of it is "
             "retained any more).")
    sp.add_argument("tenant")
    sp.add_argument("pseudonym", help="a p_<24 hex> value from a DLQ record's subject or key.subject")
    sp.set_defaults(needs=(R, K, A))
    sp.add_argument("--reason", required=True, help="why the id is needed (kept in the audit trail; no PII)")
    sp.add_argument("--actor", help="who asks (default: the login name)")

    sp = add("store", "query the Redis store of a tenant", cmd_store,
             "Query a tenant's clean events in the store: by subject, by type and time range, or by id; "
             "one JSON document a line (--count: a number). An unknown --event-id is status 2.",
             needs=(R,))
    sp.add_argument("tenant")
    sp.add_argument("--subject", help="events of this subject, oldest first")
    sp.add_argument("--type", help="events of this type (e.g. order_placed)")
    sp.add_argument("--since", type=int, help="event time from, epoch ms")
    sp.add_argument("--until", type=int, help="event time to, epoch ms")
    sp.add_argument("--event-id", help="one event by id")
    sp.add_argument("--count", action="store_true", help="print the number of events (of --type if given)")
    sp.add_argument("--limit", type=int, default=20)
    sp.add_argument("--offset", type=int, default=0)

    sp = add("schemas", "list schemas, lint their PII annotations, derive or check the clean schemas", cmd_schemas,
             "list: schemas and fingerprints. lint: fail on a field that looks like personal data but has no "
             "'pii' annotation. derive: regenerate schemas/clean/ from the raw schemas and their privacy policy. "
             "check: fail if schemas/clean/ is out of date.",
             exit1="lint found an unannotated field, or check found stale clean schemas")
    sp.add_argument("action", choices=["list", "lint", "derive", "check"])

    sp = add("detokenize", "reveal a token's value, for an authorized operator; audited", cmd_detokenize,
             "Return the original value of a token of one subject. Every call, allowed or refused, is written to "
             "the audit trail with who and why before anything is shown. A refusal (wrong subject, erased "
             "subject, no reason) is status 2.",
             needs=(R, K, A))
    sp.add_argument("tenant")
    sp.add_argument("subject", help="the subject id the token belongs to")
    sp.add_argument("token", help="a tok.<kind>.<data> value from a clean event")
    sp.add_argument("--reason", required=True, help="why the value is needed (kept in the audit trail; no PII)")
    sp.add_argument("--actor", help="who asks (default: the login name)")

    sp = add("privacy", "file privacy requests, show their receipts, report per tenant", cmd_privacy,
             "file: publish a request on the privacy requests topic and print its id (--wait N: wait up to N "
             "seconds for its receipt). Types: grant/revoke (consent for --purpose), opt_out, opt_in, erase "
             "(delete everything, block later events until opt_in), erase_and_suppress (block for good). "
             "status: a request's receipt with each step and its time. report: the tenant's compliance report.",
             needs=lambda a: (R, K) if a.action == "file" else (R,),
             exit1="file --wait: the receipt did not come in time; status: the request is pending or unknown")
    sp.add_argument("action", choices=["file", "status", "report"])
    sp.add_argument("tenant")
    sp.add_argument("--type", choices=["grant", "revoke", "opt_out", "opt_in", "erase", "erase_and_suppress"])
    sp.add_argument("--subject", help="the subject id (the tenant's id of the person)")
    sp.add_argument("--purpose", help="for grant/revoke: analytics, ml_training, marketing, customer_support")
    sp.add_argument("--reason", help="why (kept in the audit trail; no personal data)")
    sp.add_argument("--actor", help="who files it (default: the login name)")
    sp.add_argument("--request-id", help="for status")
    sp.add_argument("--wait", type=float, help="for file: seconds to wait for the receipt")

    sp = add("keys", "show or rotate a tenant's key", cmd_keys,
             "show: the tenant key's current version. rotate: a new tenant key wraps every subject key; "
             "tokens made before stay reversible. Each rotation is written to the audit trail (action "
             "key.rotate, with the old and new versions); when the trail cannot be written nothing is rotated.",
             needs=lambda a: (R, K, A) if a.action == "rotate" else (R,))
    sp.add_argument("action", choices=["show", "rotate"])
    sp.add_argument("tenant")
    sp.add_argument("--actor", help="rotate: who does it (default: the login name; kept in the audit trail)")

    sp = add("audit", "verify the signed, hash-chained audit trail; list, rotate or export its keys", cmd_audit,
             "verify: read the whole audit topic, authenticate every record with its writer's published public "
             "key and check every chain; names each chain's writer and the record where something is wrong "
             "(forged, unknown-writer, modified, removed, reordered or foreign). Exit status 1 on a break. "
             "Needs read access to the topic and the public keys (Redis, or --keyring FILE); no secret.\n\n"
             "keys list: every writer's keys (public), which is current. keys rotate [--writer W]: a new "
             "signing key for W (default: this CLI user's); the old one stays published and verifies what it "
             "signed; audited. keys export [--out FILE]: the keyring (public keys only) for auditors.",
             needs=lambda a: (K, A) if a.action == "verify" and a.keyring else (K, A, R),
             exit1="a chain is broken or cannot be authenticated, or the trail could not be read to its end")
    sp.add_argument("action", choices=["verify", "keys"])
    sp.add_argument("keys_action", nargs="?", choices=["list", "rotate", "export"], metavar="KEYS_ACTION",
                    help="for keys: list, rotate or export")
    sp.add_argument("--keyring", help="verify: a keyring file from `audit keys export` instead of Redis")
    sp.add_argument("--trail", help="verify: the trail name the records were signed for (default: the topic's)")
    sp.add_argument("--writer", help="keys rotate: whose key (e.g. worker:streams-pipeline)")
    sp.add_argument("--out", help="keys export: write the keyring to this file (default: standard output)")
    sp.add_argument("--actor", help="keys rotate: who does it (default: the login name; kept in the audit trail)")

    sp = add("tenants", "onboard, list, describe, rotate credentials of, or delete tenants", cmd_tenants,
             "create NAME: topics, Kafka SCRAM user and prefixed ACLs (secure broker), a Redis ACL user limited "
             "to the tenant's keyspace, API keys (--roles: reader, detokenizer, privacy), consent regime and tenant key, with the credentials "
             "printed once. A re-run on an onboarded tenant repairs topics, ACLs and rules but makes and shows no "
             "credential (new keys: `apikeys create --tenant`, or rotate-credentials). list / describe NAME: what exists "
             "(never secrets). rotate-credentials NAME: new Kafka and Redis passwords and API keys; the old "
             "ones stop working. delete NAME --yes: shreds the tenant's keys, revokes its credentials, deletes "
             "its topics and store, rewrites the AOF, and prints a receipt with each step's time; without "
             "--yes it changes nothing (status 2).",
             needs=(R, K, A))
    sp.add_argument("action", choices=["create", "list", "describe", "rotate-credentials", "delete"])
    sp.add_argument("name", nargs="?", help="tenant name: lowercase letters, digits, '-', starting with a letter")
    sp.add_argument("--regime", choices=["opt_out", "opt_in"], default="opt_out",
                    help="create: consent regime (opt_in: nothing is processed before consent)")
    sp.add_argument("--roles", default="reader",
                    help="create: API key roles, comma-separated: reader, detokenizer, privacy (default reader)")
    sp.add_argument("--quota", metavar="produce=B/S,fetch=B/S,request=PCT",
                    help="create (secure broker): Kafka client quotas of the tenant's principals, enforced by the "
                         "broker: produce = producer_byte_rate of producer-<t>, fetch = consumer_byte_rate of "
                         "tenant-<t>, request = request_percentage of both; any subset, X=none removes one, "
                         "`none` all. Default: no quota (a re-run without --quota leaves them as they are). "
                         "describe shows them as the broker holds them; delete removes them")
    sp.add_argument("--yes", action="store_true", help="delete: confirm")
    sp.add_argument("--actor", help="who does it (default: the login name; kept in the audit trail)")

    sp = add("principals", "make the privacy officer's and the auditor's own credentials (secure broker)",
             cmd_principals,
             "Each staff role gets a Kafka SCRAM user (and, where it needs one, a Redis user) with only its "
             "row's rights in the README's security model.\n\n"
             "privacy-officer: write privacy.requests; read receipts, request indexes, counts and the tenant "
             "registry in Redis. Run `streams privacy ...` with STREAMS_KAFKA_USERNAME=privacy-officer and its "
             "Redis user in STREAMS_REDIS_URL.\n"
             "auditor: read the audit topic and the writers' published public keys. Run `streams audit verify` "
             "with it.\n\n"
             "create ROLE: idempotent; prints a password only when it makes one. rotate ROLE: new passwords; "
             "open Redis sessions end at once, Kafka sessions within STREAMS_KAFKA_REAUTH_MS. delete ROLE: "
             "removes the users and their ACLs. list: which roles exist. Each action is audited.",
             needs=(R, K, A))
    sp.add_argument("action", choices=["create", "list", "rotate", "delete"])
    sp.add_argument("role", nargs="?", choices=["privacy-officer", "auditor"], help="the staff role")
    sp.add_argument("--actor", help="who does it (default: the login name; kept in the audit trail)")

    sp = add("apikeys", "create, list or revoke API keys of the HTTP API", cmd_apikeys,
             "API keys authenticate calls to the HTTP API served by each worker (Authorization: Bearer <token>). "
             "A key has one role: reader (read one tenant's clean events), detokenizer (also reveal tokens, "
             "audited), privacy (file the tenant's privacy requests; reads no data) or operator (manage tenants "
             "under /v1/tenants and read /metrics; reads no tenant data). Reader, detokenizer and privacy keys "
             "belong to one onboarded tenant (--tenant); operator keys to none.\n\n"
             "create --role ROLE [--tenant NAME] [--label TEXT]: make a key; its token is printed once (only a "
             "hash of it is stored: it cannot be shown again; revoke it and make another if it is lost).\n"
             "list [--tenant NAME]: keys' ids, roles, tenants, labels and creation times (never tokens or "
             "hashes).\n"
             "revoke KEY_ID: the key stops working at once, on every worker.\n\n"
             "Each action is written to the audit trail with the key's id and role (never its token).",
             needs=(R, K, A))
    sp.add_argument("action", choices=["create", "list", "revoke"])
    sp.add_argument("key_id", nargs="?", metavar="KEY_ID", help="revoke: the key's id (12 hex characters)")
    sp.add_argument("--role", choices=["operator", "reader", "detokenizer", "privacy"], help="create: the key's role")
    sp.add_argument("--tenant", help="create: the tenant of a reader or detokenizer key (onboarded); "
                                     "list: only this tenant's keys")
    sp.add_argument("--label", default="", help="create: a note naming the key's holder or use (no personal data)")
    sp.add_argument("--actor", help="who does it (default: the login name; kept in the audit trail)")

    sp = add("demo", "run the whole pipeline on the local stack with sample events", cmd_demo,
             "Start the local stack and a worker, publish sample events for two tenants (plus one bad event "
             "of each kind), and show the tenant streams, the DLQ with reasons and the store's answers. "
             "Ctrl-C stops everything.")
    sp.add_argument("--events", type=int, default=20, help="valid events per tenant (default 20)")
    sp.add_argument("--keep-running", action="store_true", help="keep the stack and worker up until Ctrl-C")
    return p


def _known_error(exc: BaseException) -> CliError | None:
    """The one-line error a library exception means for the user, or None for a bug (which keeps its traceback)."""
    from streams.audit.exceptions import AuditError
    from streams.ops.exceptions import OpsError
    from streams.privacy.exceptions import PrivacyError
    from streams.schema.exceptions import SchemaError
    from streams.tenancy.exceptions import TenancyError

    try:
        s = Settings.from_env()
    except SettingsError:
        s = None
    if s is not None:
        unreachable = deps.translate(exc, s)
        if unreachable is not None:
            return unreachable
    if isinstance(exc, (OpsError, SchemaError, TenancyError, AuditError, PrivacyError)):
        return UsageError(str(exc))
    return None


def _stdout_gone() -> int:
    # The reader of our output went away (`streams tail acme | head -1`). Like a command killed by
    # SIGPIPE, end quietly with 141 (128 + SIGPIPE) - so `set -o pipefail` scripts can still tell -
    # and point stdout at /dev/null so that the interpreter's final flush does not fail again.
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE


@contextlib.contextmanager
def _quiet_client_logs(quiet: bool) -> Iterator[None]:
    """Keep librdkafka's log lines ("FAIL ... Connection refused", one per retry) off a command's stderr.

    Without a configured handler Python prints warnings of the project's Kafka
    loggers as they come; a command reports a failure as its one line instead.
    Restored afterwards (``main`` also runs inside tests). Workers and the demo
    configure their own logging and keep these lines.
    """
    if not quiet:
        yield
        return
    kafka_log = logging.getLogger("streams.kafka")
    null = logging.NullHandler()
    saved = kafka_log.propagate
    kafka_log.addHandler(null)
    kafka_log.propagate = False
    try:
        yield
    finally:
        kafka_log.removeHandler(null)
        kafka_log.propagate = saved


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status (``streams.cli.errors``). Errors are one line on stderr."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit:  # --help, or an argparse error (status 2): its output may meet a closed pipe too
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            raise SystemExit(_stdout_gone()) from None
        raise
    except BrokenPipeError:
        return _stdout_gone()
    try:
        with _quiet_client_logs(args.command not in ("worker", "demo")):
            status = args.fn(args)
        sys.stdout.flush()  # inside the try: with a pipe, a closed reader shows here
        return status
    except BrokenPipeError:
        return _stdout_gone()
    except KeyboardInterrupt:
        print(f"streams {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except CliError as exc:
        print(f"streams {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        known = _known_error(exc)
        if known is None:
            raise
        print(f"streams {args.command}: {known}", file=sys.stderr)
        return known.exit_code


if __name__ == "__main__":
    sys.exit(main())
