"""``streams audit verify``: read the whole audit topic and check every chain in it."""

from __future__ import annotations

from typing import TextIO

from streams.ops.kafka_client import KafkaTarget
from streams.audit.chain import verify
from streams.audit.exceptions import AuditError
from streams.audit.log import read_all
from streams.cli.text import plural


def verify_command(bootstrap: KafkaTarget, topic: str, out: TextIO) -> int:
    """Print the verdict on the audit trail of ``topic``; 0 when it is intact, 1 otherwise.

    Intact: ``audit trail OK: N records in K chains, head <hash>``. Broken: one
    line per break, e.g. ``record at audit[0]@17 (chain X, seq 12) was
    modified: stored hash … != computed …``.
    """
    try:
        records = read_all(bootstrap, topic)
    except AuditError as exc:
        print(f"audit trail cannot be verified: {exc}", file=out)
        return 1
    report = verify(records)
    chains = len(report.chains)
    if report.ok:
        print(f"audit trail OK: {plural(report.records, 'record')} in {plural(chains, 'chain')}, "
              f"head {report.head or '-'}", file=out)
        return 0
    print(f"audit trail BROKEN: {plural(len(report.breaks), 'break')} "
          f"in {plural(report.records, 'record')} ({plural(chains, 'chain')})", file=out)
    for b in report.breaks:
        print(f"  {b.kind}: {b.describe(topic)}", file=out)
    return 1
