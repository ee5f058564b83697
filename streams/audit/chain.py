"""The audit trail's records, their hash chain and its verification: pure logic, no I/O.

A record
--------
Every privacy action and every detokenization becomes one JSON object::

    {"v": 1, "chain": "worker:streams-pipeline:5f0c…", "seq": 12, "at_ms": 1767225600000,
     "actor": "worker:streams-pipeline", "action": "erasure.step", "tenant": "acme",
     "subject": "p_3b1f0c9e2d4a5b6c7d8e9f0a", "reason": "request r-1 step store", "details": {"keys": 3},
     "prev": "<hash of seq 11 of this chain>", "hash": "<sha256 of this record without 'hash'>"}

- ``chain`` names the writer: each writer (one ``AuditLog``) keeps its own chain
  so that several processes can append to the one audit topic without forking
  a shared chain (see ``streams.audit.log``). ``seq`` counts from 0 per chain.
- ``actor`` is who acted (``worker:<app_id>``, ``cli:<user>``, ``api-key:<id>``),
  ``action`` what was done (``detokenize``, ``erasure.step``, ``consent.drop``,
  ``access.denied``), ``tenant`` a tenant name or null.
- ``subject`` is **only ever a pseudonym** (``pseudonym()``: ``p_`` + 24 hex),
  never a subject id; ``append`` refuses anything else, ``verify`` calls such a
  record foreign.
- ``reason`` is free text from the caller and ``details`` a flat object of
  strings, numbers, booleans or nulls. **Callers must not put personal data in
  either** (no names, e-mails, subject ids, token values, raw request bodies):
  the audit topic is kept forever and an erasure never touches it.
- ``prev`` is the ``hash`` of the previous record of the same chain (64 zeros
  for seq 0); ``hash`` is the hex SHA-256 of the canonical bytes of the record
  without ``hash``: ``json.dumps(obj, sort_keys=True, separators=(",", ":"),
  ensure_ascii=False).encode()`` (``canonical()``).
- ``anchor`` (optional, only on seq 0): ``{"chain", "seq", "hash"}`` of the
  record that was last in the topic when the chain started. It ties a new
  chain to the history before it, so removing the records another chain was
  started after is detected too.

What verification can and cannot tell
-------------------------------------
``verify`` walks the records in topic order, groups them by chain, and reports
every break with the position of the record where it shows:

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
  subject that is not a pseudonym), a second record for a seq already present
  in the chain (a forged copy with a recomputed hash, or two processes writing
  with the same chain id), a record chained to such a copy, or a seq 0 whose
  ``prev`` is not the genesis value.

A record whose stored hash does not match is reported as modified and not
again as a duplicate or out of order; its other fields are still used as
stored, so tampering with its ``chain`` or ``seq`` can make a gap show as well.

A hash chain cannot reveal that the **last** records of a chain were removed
(nothing points at them) unless a later chain anchored to them, nor a chain
rewritten from some record to its end with every hash recomputed. Against
those, keep the heads the report gives (``VerifyReport.chains``) somewhere
else and compare. Kafka itself offers an attacker with only produce rights
nothing but appending; removal or reordering needs DeleteRecords (removes a
prefix of the topic) or write access to the broker's log segments.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import time
import uuid
from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from streams.audit.exceptions import AuditChainBroken, AuditError
from streams.tenancy.names import is_valid_tenant_name

RECORD_VERSION = 1
GENESIS_PREV = "0" * 64
REQUIRED_FIELDS = frozenset({"v", "chain", "seq", "at_ms", "actor", "action", "tenant", "subject", "reason",
                             "details", "prev", "hash"})
OPTIONAL_FIELDS = frozenset({"anchor"})

MAX_TEXT = 1000  # actor, chain, reason, each detail value: audit records stay small
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
_PSEUDONYM_RE = re.compile(r"^p_[0-9a-f]{24}$")
_ACTION_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")

Position = Sequence[int]  # (partition, offset)


# ---------------------------------------------------------------- encoding

def canonical(obj: Any) -> bytes:
    """The bytes that are hashed (and, for a whole record, written to the topic)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def record_hash(record: Mapping[str, Any]) -> str:
    """Hex SHA-256 of the canonical bytes of ``record`` without its ``hash`` field."""
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def encode_record(record: Mapping[str, Any]) -> bytes:
    return canonical(dict(record))


def decode_record(value: bytes | None) -> Any:
    """The JSON value of a message, or None when it is not JSON (``verify`` reports it as foreign)."""
    if value is None:
        return None
    try:
        return json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return None


def pseudonym(tenant: str, subject: str, secret: bytes) -> str:
    """The only form in which a subject appears in the audit trail.

    ``"p_"`` + the first 24 hex characters of HMAC-SHA256(secret, "tenant/subject"):
    stable for a subject, different per tenant and per secret, and without the
    secret not computable from the subject id (subject ids are often guessable,
    so the secret must be a real random key of at least 16 bytes, kept out of
    the audit topic). While the secret exists a pseudonym is still personal
    data in law (the holder of the secret can link it); it is not the raw id.
    """
    if not isinstance(secret, (bytes, bytearray)) or len(secret) < 16:
        raise ValueError("the pseudonym secret must be at least 16 random bytes")
    if not tenant or "/" in tenant:
        raise ValueError("the tenant of a pseudonym must be a non-empty name without '/'")
    if not subject:
        raise ValueError("the subject of a pseudonym must not be empty")
    return "p_" + hmac.new(bytes(secret), f"{tenant}/{subject}".encode(), hashlib.sha256).hexdigest()[:24]


def new_chain_id(actor: str) -> str:
    return f"{actor}:{uuid.uuid4().hex}"


# ---------------------------------------------------------------- well-formedness

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _text_problem(name: str, v: Any, allow_empty: bool = False) -> str | None:
    if not isinstance(v, str):
        return f"{name} is not a string"
    if not v and not allow_empty:
        return f"{name} is empty"
    if len(v) > MAX_TEXT:
        return f"{name} is longer than {MAX_TEXT} characters"
    try:
        v.encode()
    except UnicodeEncodeError:
        return f"{name} is not valid text"
    return None


def _details_problem(details: Any) -> str | None:
    if not isinstance(details, dict):
        return "details is not an object"
    for k, v in details.items():
        if not isinstance(k, str) or not k or len(k) > 64:
            return "details has a key that is not a short string"
        if isinstance(v, str):
            if len(v) > MAX_TEXT:
                return f"details.{k} is longer than {MAX_TEXT} characters"
        elif isinstance(v, float):
            if not math.isfinite(v):
                return f"details.{k} is not a finite number"
        elif not (v is None or isinstance(v, (bool, int))):
            return f"details.{k} is not a string, number, boolean or null"
    return None


def _anchor_problem(anchor: Any) -> str | None:
    if not isinstance(anchor, dict) or set(anchor) != {"chain", "seq", "hash"}:
        return "anchor is not {chain, seq, hash}"
    if not isinstance(anchor["chain"], str) or not _is_int(anchor["seq"]) or anchor["seq"] < 0:
        return "anchor has a bad chain or seq"
    if not isinstance(anchor["hash"], str) or not _HASH_RE.match(anchor["hash"]):
        return "anchor hash is not 64 hex characters"
    return None


def malformed(record: Any) -> str | None:
    """Why ``record`` is not a well-formed audit record, or None when it is."""
    if not isinstance(record, dict):
        return "is not a JSON object"
    missing = REQUIRED_FIELDS - set(record)
    if missing:
        return f"lacks {', '.join(sorted(missing))}"
    extra = set(record) - REQUIRED_FIELDS - OPTIONAL_FIELDS
    if extra:
        return f"has unknown fields {', '.join(sorted(extra))}"
    if record["v"] != RECORD_VERSION or not _is_int(record["v"]):
        return f"has version {record['v']!r}, not {RECORD_VERSION}"
    for name in ("chain", "actor"):
        problem = _text_problem(name, record[name])
        if problem:
            return problem
    problem = _text_problem("reason", record["reason"], allow_empty=True)
    if problem:
        return problem
    if not isinstance(record["action"], str) or not _ACTION_RE.match(record["action"]):
        return "action is not a lowercase dotted name"
    if not _is_int(record["seq"]) or record["seq"] < 0:
        return "seq is not a non-negative integer"
    if not _is_int(record["at_ms"]) or record["at_ms"] < 0:
        return "at_ms is not a non-negative integer"
    if record["tenant"] is not None and not (isinstance(record["tenant"], str)
                                             and is_valid_tenant_name(record["tenant"])):
        return "tenant is not a tenant name"
    if record["subject"] is not None and not (isinstance(record["subject"], str)
                                              and _PSEUDONYM_RE.match(record["subject"])):
        return "subject is not a pseudonym"
    problem = _details_problem(record["details"])
    if problem:
        return problem
    for name in ("prev", "hash"):
        if not isinstance(record[name], str) or not _HASH_RE.match(record[name]):
            return f"{name} is not 64 lowercase hex characters"
    if "anchor" in record:
        if record["seq"] != 0:
            return "has an anchor but is not seq 0"
        problem = _anchor_problem(record["anchor"])
        if problem:
            return problem
    return None


# ---------------------------------------------------------------- writing

class AuditChain:
    """One writer's chain: its id and head (last seq and hash); builds the next record.

    Not thread-safe and does no I/O; ``AuditLog`` serializes appends and writes.
    """

    def __init__(self, chain_id: str, anchor: Mapping[str, Any] | None = None) -> None:
        problem = _text_problem("chain id", chain_id)
        if problem:
            raise AuditError(problem)
        if anchor is not None:
            anchor = {"chain": anchor["chain"], "seq": anchor["seq"], "hash": anchor["hash"]}
            problem = _anchor_problem(anchor)
            if problem:
                raise AuditError(problem)
        self.chain_id = chain_id
        self.anchor = anchor
        self.seq = -1  # last seq written; -1 before the first record
        self.head_hash = GENESIS_PREV

    @property
    def head(self) -> tuple[int, str]:
        """(seq, hash) of the last record of the chain; (-1, 64 zeros) when it has none yet."""
        return self.seq, self.head_hash

    @classmethod
    def resume(cls, last_record: Mapping[str, Any]) -> "AuditChain":
        """Continue the chain of ``last_record`` (its last record, read back after a restart)."""
        problem = malformed(dict(last_record))
        if problem:
            raise AuditError(f"cannot resume from a record that {problem}")
        if record_hash(last_record) != last_record["hash"]:
            raise AuditError(f"cannot resume chain {last_record['chain']}: its last record (seq "
                             f"{last_record['seq']}) does not match its hash")
        chain = cls(last_record["chain"])
        chain.seq = last_record["seq"]
        chain.head_hash = last_record["hash"]
        return chain

    def build(self, actor: str, action: str, tenant: str | None, subject_pseudonym: str | None,
              reason: str, details: Mapping[str, Any] | None = None, at_ms: int | None = None) -> dict[str, Any]:
        """The next record, without advancing the head (``advance`` does, once it is written)."""
        record: dict[str, Any] = {
            "v": RECORD_VERSION,
            "chain": self.chain_id,
            "seq": self.seq + 1,
            "at_ms": int(time.time() * 1000) if at_ms is None else at_ms,
            "actor": actor,
            "action": action,
            "tenant": tenant,
            "subject": subject_pseudonym,
            "reason": reason,
            "details": dict(details or {}),
            "prev": self.head_hash,
        }
        if self.seq == -1 and self.anchor is not None:
            record["anchor"] = dict(self.anchor)
        # Checked before anything is hashed or written: a record verify would call foreign is refused.
        problem = malformed({**record, "hash": GENESIS_PREV})
        if problem:
            raise AuditError(f"refusing an audit record: {problem}")
        record["hash"] = record_hash(record)
        return record

    def advance(self, record: Mapping[str, Any]) -> None:
        if record["chain"] != self.chain_id or record["seq"] != self.seq + 1 or record["prev"] != self.head_hash:
            raise AuditError("the record does not continue this chain")
        self.seq = record["seq"]
        self.head_hash = record["hash"]

    def append(self, actor: str, action: str, tenant: str | None, subject_pseudonym: str | None,
               reason: str, details: Mapping[str, Any] | None = None, at_ms: int | None = None) -> dict[str, Any]:
        """Build the next record and advance the head to it. Raises AuditError for a bad field."""
        record = self.build(actor, action, tenant, subject_pseudonym, reason, details, at_ms)
        self.advance(record)
        return record


# ---------------------------------------------------------------- verification

@dataclass(frozen=True)
class ChainHead:
    seq: int  # highest seq present
    hash: str  # hash of that record
    partition: int
    offset: int
    records: int  # records of the chain in the trail


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


def verify(records: Iterable[tuple[Position, Any]]) -> VerifyReport:
    """Check a whole audit trail given as ``(position, record)`` in topic order.

    ``position`` is ``(partition, offset)``; ``record`` the decoded JSON (None
    for a message that is not JSON). The rules are in the module docstring.
    """
    report = VerifyReport()
    found: list[tuple[int, AuditChainBroken]] = []
    by_chain: dict[str, list[_Entry]] = defaultdict(list)

    def brk(kind: str, e: _Entry, detail: str) -> None:
        found.append((e.index, AuditChainBroken(kind, e.partition, e.offset, e.seq, e.record["chain"], detail)))

    for index, (pos, rec) in enumerate(records):
        report.records += 1
        partition, offset = int(pos[0]), int(pos[1])
        problem = malformed(rec)
        if problem:
            chain = rec.get("chain") if isinstance(rec, dict) and isinstance(rec.get("chain"), str) else None
            seq = rec.get("seq") if isinstance(rec, dict) and _is_int(rec.get("seq")) and rec["seq"] >= 0 else None
            stored = rec.get("hash") if isinstance(rec, dict) else None
            computed = _try_hash(rec) if isinstance(stored, str) and _HASH_RE.match(stored) else None
            if chain is not None and seq is not None and computed is not None and computed != stored:
                # An audit record someone edited into a shape the writer refuses: still "modified".
                e = _Entry(index, partition, offset, rec, True)
                brk("modified", e, f"was modified: stored hash {stored} != computed {computed} (and it {problem})")
                by_chain[chain].append(e)
            else:
                found.append((index, AuditChainBroken("foreign", partition, offset, seq, chain,
                                                      f"is not a valid audit record: it {problem}")))
            continue
        computed = record_hash(rec)
        e = _Entry(index, partition, offset, rec, computed != rec["hash"])
        if e.modified:
            brk("modified", e, f"was modified: stored hash {rec['hash']} != computed {computed}")
        by_chain[rec["chain"]].append(e)
        report.head = rec["hash"]

    accepted_all: dict[str, dict[int, _Entry]] = {}
    for chain, entries in by_chain.items():
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
                brk("foreign", e, f"is a second copy of the record at {first.where}")
            else:
                brk("foreign", e, f"claims seq {e.seq}, which the record at {first.where} already holds "
                                  "(a forged record, or a second writer using the same chain id)")
        accepted_all[chain] = accepted

        # Order: the records outside a longest in-order run were moved.
        in_order = sorted(accepted.values(), key=lambda x: x.index)
        seqs = [x.seq for x in in_order]
        if any(a > b for a, b in zip(seqs, seqs[1:])):
            kept = _longest_in_order(seqs)
            for i, e in enumerate(in_order):
                if i in kept or e.modified:
                    continue
                before = next((in_order[j] for j in range(i - 1, -1, -1) if j in kept), None)
                after = next((in_order[j] for j in range(i + 1, len(in_order)) if j in kept), None)
                around = " and ".join(
                    f"seq {x.seq} at {x.where}" for x in (before, after) if x is not None)
                brk("reordered", e, f"is out of order: it sits between {around}" if before and after
                    else f"is out of order: it sits {'after' if before else 'before'} {around}")

        # Gaps: reported at the first record after each run of missing seqs.
        present = sorted(accepted)
        expected = 0
        for s in present:
            if s > expected:
                missing = f"seq {expected}" if s - expected == 1 else f"seqs {expected}-{s - 1}"
                brk("removed", accepted[s], f"follows a gap in its chain: {missing} missing (removed)")
            expected = s + 1

        # Links.
        for s in present:
            e = accepted[s]
            if e.modified:
                continue
            if s == 0:
                if e.record["prev"] != GENESIS_PREV:
                    brk("foreign", e, f"is seq 0 but its prev is {_short(e.record['prev'])}, not the genesis value")
                continue
            before = accepted.get(s - 1)
            if before is None or e.record["prev"] == before.hash:
                continue
            copy = next((d for d in dups.get(s - 1, ()) if d.hash == e.record["prev"]), None)
            if copy is not None:
                brk("foreign", e, f"continues the duplicate record at {copy.where}, not the chain")
            else:
                brk("removed", e, f"is chained to a record that is gone: prev {_short(e.record['prev'])} != hash "
                                  f"{_short(before.hash)} of seq {s - 1} at {before.where} (that record was "
                                  "removed and the chain renumbered, or replaced with a recomputed hash)")

    # Anchors: a chain's seq 0 names the record that was last in the topic when it started.
    for chain, accepted in accepted_all.items():
        e = accepted.get(0)
        if e is None or e.modified or "anchor" not in e.record:
            continue
        a = e.record["anchor"]
        target = accepted_all.get(a["chain"], {}).get(a["seq"])
        name = f"seq {a['seq']} of chain {a['chain']}"
        if target is None:
            brk("removed", e, f"starts after {name}, which is not in the trail (removed)")
        elif target.hash != a["hash"]:
            brk("removed", e, f"starts after {name} with hash {_short(a['hash'])}, but the record at "
                              f"{target.where} has hash {_short(target.hash)} (replaced)")
        elif target.index > e.index:
            brk("reordered", e, f"starts after {name}, which comes later, at {target.where}")

    found.sort(key=lambda t: t[0])
    report.breaks = [b for _, b in found]
    for chain, accepted in accepted_all.items():
        last = accepted[max(accepted)]
        report.chains[chain] = ChainHead(last.seq, last.hash, last.partition, last.offset, len(by_chain[chain]))
    return report
