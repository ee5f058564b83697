"""Verification of a whole audit trail: authenticate every record, rebuild the chains, name every break.

The record format is described in ``streams.audit.chain`` (which re-exports
``verify``, ``VerifyReport`` and ``ChainHead``); its rules in
``streams.audit.record``.

What verification can and cannot tell
-------------------------------------
``verify`` walks the records in topic order, authenticates each against the
keyring (the writers' published public keys), groups the authentic ones by
chain, and reports every break with the position of the record where it shows:

- **forged**: a record without a signature, with a signature that does not
  verify (a forged record that copies a real writer's id and key id, or a
  genuine record replayed into another trail), or whose key belongs to
  another writer than the one it names.
- **unknown-writer**: records signed with a key the keyring does not hold (an
  outsider's own key pair, or a writer key that was never published); one
  break per chain, at its first such record, naming the claimed writer and key.
- **modified**: the stored ``hash`` is not the hash of the record's content
  (someone changed a field and could not recompute the hash, or did not try).
- **removed**: seqs are missing in a chain (reported at the first record after
  the gap); or seqs are continuous but a record's ``prev`` is not the hash of
  the record holding the seq before it: the record it was chained to is gone,
  either removed with the rest renumbered or replaced by one with a recomputed
  hash; or a chain's ``anchor`` names a record that is not in the trail, or is
  there with another hash.
- **reordered**: a chain's records are not in seq order in the topic. The
  records that are not in the longest in-order run of the chain are reported
  (swap two adjacent records and the later-placed one is reported).
- **foreign**: a record the chain's writer cannot have written at that place:
  not a well-formed audit record (not JSON, missing or mistyped fields, a
  subject that is not a pseudonym), a genuine record replayed (a second copy
  of a seq already present), a record of another writer in the chain, a
  second record for a seq (two processes writing with the same chain id), a
  record chained to such a copy, or a seq 0 whose ``prev`` is not the
  genesis value.

Forged and unknown-writer records take no part in the chains: a forgery can
neither displace a genuine record nor make a genuine chain look broken. A
record whose stored hash does not match is reported as modified and not
again as a duplicate or out of order; its other fields are still used as
stored, so tampering with its ``chain`` or ``seq`` can make a gap show as well.

With signatures, only a writer's key can extend or rewrite its chain. A hash
chain still cannot reveal that the **last** records of a chain were removed
(nothing points at them) unless a later chain anchored to them. Against that,
keep the heads the report gives (``VerifyReport.chains``) somewhere else and
compare. Kafka itself offers an attacker with only produce rights nothing
but appending; removal or reordering needs DeleteRecords (removes a prefix of
the topic) or write access to the broker's log segments.

How the walk is split
---------------------
In this order (breaks are then sorted stably by place in the walk, so the
order matters): ``_admit`` each record; ``_report_unknown_writers``; per chain
``_accept_seqs``, ``_check_order``, ``_check_gaps``, ``_check_links``; then
``_check_anchors``; ``_summary`` builds the report.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from streams.audit.exceptions import AuditChainBroken
from streams.audit.record import (
    _HASH_RE,
    DEFAULT_TRAIL,
    GENESIS_PREV,
    _is_int,
    authentication_problem,
    malformed,
    record_hash,
)
from streams.audit.signing import PublicKey

Position = Sequence[int]  # (partition, offset)


@dataclass(frozen=True)
class ChainHead:
    seq: int  # highest seq present
    hash: str  # hash of that record
    partition: int
    offset: int
    records: int  # records of the chain in the trail (authenticated or modified)
    writer: str = ""  # the writer whose key signed the chain
    kids: tuple[str, ...] = ()  # the keys that signed it, in order of first use


@dataclass
class VerifyReport:
    records: int = 0  # records walked, well-formed or not
    chains: dict[str, ChainHead] = field(default_factory=dict)
    breaks: list[AuditChainBroken] = field(default_factory=list)
    head: str | None = None  # hash of the last well-formed record in topic order

    @property
    def ok(self) -> bool:
        return not self.breaks

    def raise_if_broken(self) -> None:
        if self.breaks:
            raise self.breaks[0]


@dataclass
class _Entry:
    index: int  # place in the walk
    partition: int
    offset: int
    record: dict[str, Any]
    modified: bool

    @property
    def seq(self) -> int:
        return self.record["seq"]

    @property
    def hash(self) -> str:
        return self.record["hash"]

    @property
    def where(self) -> str:
        return f"[{self.partition}]@{self.offset}"


def _short(h: str) -> str:
    return h[:16] + "…"


def _try_hash(record: Any) -> str | None:
    try:
        return record_hash(record)
    except (ValueError, TypeError):  # NaN, or a value JSON cannot hold
        return None


def _longest_in_order(seqs: list[int]) -> set[int]:
    """Indices of a longest increasing subsequence of distinct ``seqs`` (on ties, earlier elements stay)."""
    n = len(seqs)
    vals = [-s for s in reversed(seqs)]  # longest decreasing run of the reversed list
    tails: list[int] = []
    tail_vals: list[int] = []
    parent = [-1] * n
    for i, v in enumerate(vals):
        k = bisect_left(tail_vals, v)
        if k == len(tails):
            tails.append(i)
            tail_vals.append(v)
        else:
            tails[k] = i
            tail_vals[k] = v
        parent[i] = tails[k - 1] if k > 0 else -1
    kept: set[int] = set()
    i = tails[-1] if tails else -1
    while i != -1:
        kept.add(n - 1 - i)
        i = parent[i]
    return kept


def _claimed(rec: Any) -> tuple[str | None, int | None]:
    """The chain and seq a (possibly bad) record claims, where they have the right types."""
    if not isinstance(rec, dict):
        return None, None
    chain = rec.get("chain") if isinstance(rec.get("chain"), str) else None
    seq = rec.get("seq") if _is_int(rec.get("seq")) and rec["seq"] >= 0 else None
    return chain, seq


@dataclass
class _Walk:
    """What the steps of ``verify`` share: the report so far, the breaks found, and the chains."""

    report: VerifyReport = field(default_factory=VerifyReport)
    found: list[tuple[int, AuditChainBroken]] = field(default_factory=list)  # (place in the walk, break)
    by_chain: dict[str, list[_Entry]] = field(default_factory=lambda: defaultdict(list))
    chain_writer: dict[str, str] = field(default_factory=dict)
    # chain -> records signed by keys not in the keyring
    unknown: dict[str, list[_Entry]] = field(default_factory=lambda: defaultdict(list))
    accepted_all: dict[str, dict[int, _Entry]] = field(default_factory=dict)

    def brk(self, kind: str, e: _Entry, detail: str) -> None:
        self.found.append((e.index, AuditChainBroken(kind, e.partition, e.offset, e.seq, e.record["chain"], detail)))


def verify(records: Iterable[tuple[Position, Any]], keyring: Mapping[str, PublicKey],
           trail: str = DEFAULT_TRAIL) -> VerifyReport:
    """Check a whole audit trail given as ``(position, record)`` in topic order.

    ``position`` is ``(partition, offset)``; ``record`` the decoded JSON (None
    for a message that is not JSON); ``keyring`` the published public keys
    (``streams.audit.signing.Keyring``); ``trail`` the name the records were
    signed for (the audit topic's). The rules are in the module docstring.
    """
    walk = _Walk()
    for index, (pos, rec) in enumerate(records):
        walk.report.records += 1
        _admit(walk, index, int(pos[0]), int(pos[1]), rec, keyring, trail)
    _report_unknown_writers(walk)
    for chain, entries in walk.by_chain.items():
        accepted, dups = _accept_seqs(walk, entries)
        walk.accepted_all[chain] = accepted
        _check_order(walk, accepted)
        _check_gaps(walk, accepted)
        _check_links(walk, accepted, dups)
    _check_anchors(walk)
    return _summary(walk)


# ---------------------------------------------------------------- step 1: each record on its own

def _admit(walk: _Walk, index: int, partition: int, offset: int, rec: Any,
           keyring: Mapping[str, PublicKey], trail: str) -> None:
    """Place one record: report it as unsigned, malformed or modified, set it aside, or add it to its chain."""
    if isinstance(rec, dict) and "sig" not in rec and "chain" in rec:  # an audit record, unsigned
        chain, seq = _claimed(rec)
        walk.found.append((index, AuditChainBroken(
            "forged", partition, offset, seq, chain,
            "is not signed: every audit record must carry its writer's signature (unsigned records are "
            "not accepted)")))
        return
    problem = malformed(rec)
    if problem:
        _admit_malformed(walk, index, partition, offset, rec, problem)
        return
    computed = record_hash(rec)
    e = _Entry(index, partition, offset, rec, computed != rec["hash"])
    if e.modified:
        # Its signature cannot verify either; "modified" says more. It still holds its place in its chain.
        walk.brk("modified", e, f"was modified: stored hash {rec['hash']} != computed {computed}")
        walk.by_chain[rec["chain"]].append(e)
        return
    _admit_authentic(walk, e, keyring, trail)


def _admit_malformed(walk: _Walk, index: int, partition: int, offset: int, rec: Any, problem: str) -> None:
    """A record that is not well-formed: modified when it is an edited audit record, foreign otherwise."""
    chain = rec.get("chain") if isinstance(rec, dict) and isinstance(rec.get("chain"), str) else None
    seq = rec.get("seq") if isinstance(rec, dict) and _is_int(rec.get("seq")) and rec["seq"] >= 0 else None
    stored = rec.get("hash") if isinstance(rec, dict) else None
    computed = _try_hash(rec) if isinstance(stored, str) and _HASH_RE.match(stored) else None
    if chain is not None and seq is not None and computed is not None and computed != stored:
        # An audit record someone edited into a shape the writer refuses: still "modified".
        e = _Entry(index, partition, offset, rec, True)
        walk.brk("modified", e, f"was modified: stored hash {stored} != computed {computed} (and it {problem})")
        walk.by_chain[chain].append(e)
    else:
        walk.found.append((index, AuditChainBroken("foreign", partition, offset, seq, chain,
                                                   f"is not a valid audit record: it {problem}")))


def _admit_authentic(walk: _Walk, e: _Entry, keyring: Mapping[str, PublicKey], trail: str) -> None:
    """An intact record: into its chain only when a key of the keyring signed it, for the chain's writer."""
    rec = e.record
    # Authenticated or left out: a record nobody with a key signed takes no part in the chains, so a
    # forgery can neither displace a genuine record nor hide behind one.
    if rec["kid"] not in keyring:
        walk.unknown[rec["chain"]].append(e)
        return
    problem = authentication_problem(rec, keyring, trail)
    if problem:
        walk.brk("forged", e, problem)
        return
    owner = walk.chain_writer.setdefault(rec["chain"], rec["writer"])
    if owner != rec["writer"]:
        walk.brk("foreign", e, f"is signed by writer {rec['writer']}, but chain {rec['chain']} is writer {owner}'s")
        return
    walk.by_chain[rec["chain"]].append(e)
    walk.report.head = rec["hash"]


def _report_unknown_writers(walk: _Walk) -> None:
    """One break per chain with records signed by keys the keyring does not hold, at its first such record."""
    for chain, entries in walk.unknown.items():
        first = entries[0]
        claimed = sorted({x.record["writer"] for x in entries})
        kids = sorted({x.record["kid"] for x in entries})
        what = ("starts a chain from an unknown writer" if chain not in walk.by_chain
                else "is one of the records of this chain from an unknown writer")
        walk.brk("unknown-writer", first,
                 f"{what}: {len(entries)} record{'s' if len(entries) != 1 else ''} claiming writer "
                 f"{', '.join(claimed)} signed with key{'s' if len(kids) != 1 else ''} {', '.join(kids)}, which the "
                 "keyring does not hold (not authenticated: not part of the trail)")


# ---------------------------------------------------------------- step 2: each chain

def _accept_seqs(walk: _Walk, entries: list[_Entry]) -> tuple[dict[int, _Entry], dict[int, list[_Entry]]]:
    """The record holding each seq of a chain, and the duplicates (reported as foreign unless modified)."""
    accepted: dict[int, _Entry] = {}
    dups: dict[int, list[_Entry]] = defaultdict(list)
    for e in entries:
        first = accepted.get(e.seq)
        if first is None:
            accepted[e.seq] = e
            continue
        if first.modified and not e.modified:
            # A later intact record holds this seq; the modified one (already reported) steps aside.
            accepted[e.seq] = e
            dups[e.seq].append(first)
            continue
        dups[e.seq].append(e)
        if e.modified:
            continue  # reported as modified already
        if e.hash == first.hash:
            walk.brk("foreign", e, f"is a second copy of the record at {first.where}")
        else:
            walk.brk("foreign", e, f"claims seq {e.seq}, which the record at {first.where} already holds "
                                   "(a forged record, or a second writer using the same chain id)")
    return accepted, dups


def _check_order(walk: _Walk, accepted: dict[int, _Entry]) -> None:
    """Order: the records outside a longest in-order run were moved."""
    in_order = sorted(accepted.values(), key=lambda x: x.index)
    seqs = [x.seq for x in in_order]
    if not any(a > b for a, b in zip(seqs, seqs[1:])):
        return
    kept = _longest_in_order(seqs)
    for i, e in enumerate(in_order):
        if i in kept or e.modified:
            continue
        before = next((in_order[j] for j in range(i - 1, -1, -1) if j in kept), None)
        after = next((in_order[j] for j in range(i + 1, len(in_order)) if j in kept), None)
        around = " and ".join(
            f"seq {x.seq} at {x.where}" for x in (before, after) if x is not None)
        walk.brk("reordered", e, f"is out of order: it sits between {around}" if before and after
                 else f"is out of order: it sits {'after' if before else 'before'} {around}")


def _check_gaps(walk: _Walk, accepted: dict[int, _Entry]) -> None:
    """Gaps: reported at the first record after each run of missing seqs."""
    expected = 0
    for s in sorted(accepted):
        if s > expected:
            missing = f"seq {expected}" if s - expected == 1 else f"seqs {expected}-{s - 1}"
            walk.brk("removed", accepted[s], f"follows a gap in its chain: {missing} missing (removed)")
        expected = s + 1


def _check_links(walk: _Walk, accepted: dict[int, _Entry], dups: dict[int, list[_Entry]]) -> None:
    """Links: each record's ``prev`` is the hash of the record holding the seq before it (genesis for seq 0)."""
    for s in sorted(accepted):
        e = accepted[s]
        if e.modified:
            continue
        if s == 0:
            if e.record["prev"] != GENESIS_PREV:
                walk.brk("foreign", e, f"is seq 0 but its prev is {_short(e.record['prev'])}, not the genesis value")
            continue
        before = accepted.get(s - 1)
        if before is None or e.record["prev"] == before.hash:
            continue
        copy = next((d for d in dups.get(s - 1, ()) if d.hash == e.record["prev"]), None)
        if copy is not None:
            walk.brk("foreign", e, f"continues the duplicate record at {copy.where}, not the chain")
        else:
            walk.brk("removed", e, f"is chained to a record that is gone: prev {_short(e.record['prev'])} != hash "
                                   f"{_short(before.hash)} of seq {s - 1} at {before.where} (that record was "
                                   "removed and the chain renumbered, or replaced with a recomputed hash)")


# ---------------------------------------------------------------- step 3: across chains, and the report

def _check_anchors(walk: _Walk) -> None:
    """Anchors: a chain's seq 0 names the record that was last in the topic when it started."""
    for chain, accepted in walk.accepted_all.items():
        e = accepted.get(0)
        if e is None or e.modified or "anchor" not in e.record:
            continue
        a = e.record["anchor"]
        target = walk.accepted_all.get(a["chain"], {}).get(a["seq"])
        name = f"seq {a['seq']} of chain {a['chain']}"
        if target is None:
            walk.brk("removed", e, f"starts after {name}, which is not in the trail (removed)")
        elif target.hash != a["hash"]:
            walk.brk("removed", e, f"starts after {name} with hash {_short(a['hash'])}, but the record at "
                                   f"{target.where} has hash {_short(target.hash)} (replaced)")
        elif target.index > e.index:
            walk.brk("reordered", e, f"starts after {name}, which comes later, at {target.where}")


def _summary(walk: _Walk) -> VerifyReport:
    """The breaks in walk order, and each chain's head."""
    report = walk.report
    walk.found.sort(key=lambda t: t[0])
    report.breaks = [b for _, b in walk.found]
    for chain, accepted in walk.accepted_all.items():
        last = accepted[max(accepted)]
        kids = tuple(dict.fromkeys(x.record["kid"] for x in walk.by_chain[chain] if not x.modified))
        writer = walk.chain_writer.get(chain) or last.record["writer"]
        report.chains[chain] = ChainHead(last.seq, last.hash, last.partition, last.offset,
                                         len(walk.by_chain[chain]), writer, kids)
    return report
