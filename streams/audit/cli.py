"""``streams audit``: verify the trail (every record authenticated, every chain intact) and manage its keys.

An auditor needs read access to the audit topic and the writers' public keys:
either read access to the one Redis key ``audit:{<topic>}:pub`` (the default
source) or a keyring file exported with ``streams audit keys export`` and
passed as ``--keyring`` (then no Redis access at all; keep a pinned copy and a
Redis writer cannot slip in a key of its own). Nothing an auditor holds can
sign a record.
"""

from __future__ import annotations

from typing import TextIO

from streams.audit.chain import verify
from streams.audit.exceptions import AuditError
from streams.audit.log import read_all
from streams.audit.signing import Keyring
from streams.connections import KafkaTarget, Purpose, redis_client
from streams.cli.text import plural


def verify_command(bootstrap: KafkaTarget, topic: str, out: TextIO, keyring: Keyring, *,
                   trail: str | None = None, keyring_source: str = "") -> int:
    """Print the verdict on the audit trail of ``topic``; 0 when it is intact and authentic, 1 otherwise.

    Intact: ``audit trail OK: N records in K chains, head <hash>``. Broken: one
    line per break, e.g. ``forged: record at audit[0]@17 (chain X, seq 12) has a
    signature that does not verify …``. Then one line per chain naming its
    writer and keys. ``trail`` is the name the records were signed for (the
    topic's, unless the trail was copied to a topic of another name).
    """
    try:
        records = read_all(bootstrap, topic)
    except AuditError as exc:
        print(f"audit trail cannot be verified: {exc}", file=out)
        return 1
    report = verify(records, keyring, trail or topic)
    chains = len(report.chains)
    if report.ok:
        print(f"audit trail OK: {plural(report.records, 'record')} in {plural(chains, 'chain')}, "
              f"head {report.head or '-'}", file=out)
    else:
        print(f"audit trail BROKEN: {plural(len(report.breaks), 'break')} in {plural(report.records, 'record')} "
              f"({plural(chains, 'chain')})", file=out)
        for b in report.breaks:
            print(f"  {b.kind}: {b.describe(topic)}", file=out)
    writers = sorted({h.writer for h in report.chains.values()})
    print(f"keyring: {plural(len(keyring), 'key')} of {plural(len(keyring.writers()), 'writer')}"
          f"{' from ' + keyring_source if keyring_source else ''}; chains written by: {', '.join(writers) or '-'}",
          file=out)
    for chain_id, h in report.chains.items():
        print(f"  chain {chain_id}: writer {h.writer}, {'key' if len(h.kids) == 1 else 'keys'} "
              f"{', '.join(h.kids) or '-'}, seqs 0-{h.seq} ({plural(h.records, 'record')}), head {h.hash}",
              file=out)
    return 0 if report.ok else 1


def audit_command(settings, action: str, keys_action: str | None, *, keyring_file: str | None = None,
                  trail: str | None = None, writer: str | None = None, out_file: str | None = None,
                  cli_writer: str, actor: str, out: TextIO) -> int:
    """``streams audit verify|keys …`` (``streams.cli.main`` parses the arguments)."""
    from streams.cli.errors import UsageError

    if action == "verify":
        if keys_action or writer or out_file:
            raise UsageError("verify takes only --keyring and --trail")
        return _verify_subcommand(settings, keyring_file=keyring_file, trail=trail, out=out)

    if keys_action is None:
        raise UsageError("audit keys needs an action: list, rotate or export")
    if keyring_file or trail:
        raise UsageError("--keyring and --trail are for verify")
    client = redis_client(settings, Purpose.ADMIN)
    if keys_action == "export":
        if writer:
            raise UsageError("export takes only --out")
        return _keys_export(settings, client, out_file=out_file, out=out)
    if out_file:
        raise UsageError("--out is for export")
    from streams.audit.keys import AuditKeyStore
    from streams.privacy.keys import LocalKeyFileProvider

    provider = LocalKeyFileProvider(settings.master_key_file, create=False)
    store = AuditKeyStore(client, provider, settings.audit_topic)
    if keys_action == "list":
        if writer:
            raise UsageError("list takes no --writer")
        return _keys_list(store, out=out)
    return _keys_rotate(settings, client, provider, store, writer=writer, cli_writer=cli_writer, actor=actor,
                        out=out)


def _verify_subcommand(settings, *, keyring_file: str | None, trail: str | None, out: TextIO) -> int:
    """``streams audit verify [--keyring FILE] [--trail NAME]``: keys from the file, else from Redis."""
    import redis

    from streams.audit.keys import keyring_from_file, keyring_from_redis, public_key

    topic = settings.audit_topic
    if keyring_file:
        keyring, source = keyring_from_file(keyring_file), f"file {keyring_file}"
    else:
        client = redis_client(settings, Purpose.ADMIN)
        try:
            keyring = keyring_from_redis(client, trail or topic)
        except (redis.RedisError, OSError) as exc:
            raise AuditError(f"cannot read the published audit keys from Redis ({exc}); "
                             "pass an exported keyring with --keyring FILE") from None
        source = f"Redis {public_key(trail or topic)}"
    return verify_command(settings.kafka(), topic, out, keyring, trail=trail, keyring_source=source)


def _keys_export(settings, client, *, out_file: str | None, out: TextIO) -> int:
    """``streams audit keys export [--out FILE]``: the published public keys, to a file (atomically) or ``out``."""
    import os

    from streams.audit.keys import keyring_from_redis

    topic = settings.audit_topic
    text = keyring_from_redis(client, topic).dumps()
    if out_file and out_file != "-":
        tmp = f"{out_file}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, out_file)
        print(f"audit keyring of {topic} written to {out_file} (public keys only)", file=out)
    else:
        out.write(text)
    return 0


def _keys_list(store, *, out: TextIO) -> int:
    """``streams audit keys list``: every published key, and which are current, as JSON."""
    import json

    from streams.audit.keys import describe_keyring

    print(json.dumps(describe_keyring(store.keyring(), store.current_kids()), indent=2), file=out)
    return 0


def _keys_rotate(settings, client, provider, store, *, writer: str | None, cli_writer: str, actor: str,
                 out: TextIO) -> int:
    """``streams audit keys rotate [--writer W]``: a new key for W (default: this CLI's writer), audited."""
    import json

    from streams.audit.keys import open_audit_log

    target = writer or cli_writer
    old, new = store.rotate(target)
    with open_audit_log(settings, actor, cli_writer, client=client, provider=provider) as audit:
        audit.append("audit.key.rotate", None, None, f"audit signing key of {target} rotated",
                     {"writer": target, "old_kid": old, "new_kid": new})
    print(json.dumps({"writer": target, "old_kid": old, "new_kid": new,
                      "note": "processes of this writer sign with the new key from their next start; "
                              "the old key stays published and verifies what it signed"}, indent=2), file=out)
    return 0
