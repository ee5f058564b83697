"""Errors of the audit trail."""

from __future__ import annotations

from streams.errors import StreamsError

BREAK_KINDS = ("modified", "removed", "reordered", "foreign", "forged", "unknown-writer")


class AuditError(StreamsError):
    """The audit trail cannot be written or read (and so the audited action must not be reported done)."""

    transient = True  # the broker is away: the worker holds back until the trail can be written


class AuditChainBroken(AuditError):
    """Verification found a break in the audit trail, and where.

    ``partition`` and ``offset`` locate the record at which the break shows
    (for a removal: the first record after the gap); ``seq`` and ``chain``
    are as stored in that record (None when it is not a readable audit
    record); ``kind`` is one of ``modified``, ``removed``, ``reordered``,
    ``foreign``, ``forged`` (unsigned, or a signature that does not verify)
    and ``unknown-writer`` (signed with a key the keyring does not hold; the
    rules are in ``streams.audit.chain``) and
    ``detail`` says what was found, for example
    ``was modified: stored hash 1f… != computed 9a…``.
    """

    def __init__(self, kind: str, partition: int, offset: int, seq: int | None, chain: str | None,
                 detail: str) -> None:
        if kind not in BREAK_KINDS:
            raise ValueError(f"unknown break kind {kind!r}")
        self.kind = kind
        self.partition = partition
        self.offset = offset
        self.seq = seq
        self.chain = chain
        self.detail = detail
        super().__init__(self.describe())

    @property
    def position(self) -> tuple[int, int, int | None]:
        """(partition, offset, sequence) of the record at which the break shows."""
        return (self.partition, self.offset, self.seq)

    def describe(self, topic: str = "") -> str:
        where = f"{topic}[{self.partition}]@{self.offset}"
        who = f"chain {self.chain}, seq {self.seq}" if self.chain is not None else "not an audit record"
        return f"record at {where} ({who}) {self.detail}"

    def __repr__(self) -> str:
        return f"AuditChainBroken({self.kind!r}, {self.partition}, {self.offset}, seq={self.seq}, chain={self.chain!r})"
