"""The audit trail's records, their hash chain, signatures and verification: pure logic, no I/O.

A record
--------
Every privacy action and every detokenization becomes one JSON object::

    {"v": 2, "chain": "worker:streams-pipeline:5f0c…", "seq": 12, "at_ms": 1767225600000,
     "actor": "worker:streams-pipeline", "action": "erasure.step", "tenant": "acme",
     "subject": "p_3b1f0c9e2d4a5b6c7d8e9f0a", "reason": "request r-1 step store", "details": {"keys": 3},
     "prev": "<hash of seq 11 of this chain>", "writer": "worker:streams-pipeline", "kid": "9f86d081884c7d65",
     "hash": "<sha256 of this record without 'hash' and 'sig'>", "sig": "<Ed25519 signature, base64url>"}

- ``chain`` names the chain: each ``AuditLog`` keeps its own chain so that
  several processes can append to the one audit topic without forking a shared
  chain (see ``streams.audit.log``). ``seq`` counts from 0 per chain.
- ``actor`` is who acted (``worker:<app_id>``, ``cli:<user>``, ``api-key:<id>``),
  ``action`` what was done (``detokenize``, ``erasure.step``, ``consent.drop``,
  ``access.denied``), ``tenant`` a tenant name or null.
- ``writer`` is the signing identity of the process that wrote the record
  (``worker:<app_id>``, ``cli:<login>``) and ``kid`` the id of the key it
  signed with; ``sig`` is its Ed25519 signature over the whole record (but
  ``sig``) and the trail's name (``streams.audit.signing`` says why Ed25519
  and what exactly is signed). **Signatures are mandatory**: version 1
  records (unsigned) are not accepted; the project had no production trail
  when signing came in, so nothing old needs reading.
- ``subject`` is **only ever a pseudonym** (``pseudonym()``: ``p_`` + 24 hex),
  never a subject id; ``append`` refuses anything else, ``verify`` calls such a
  record foreign.
- ``reason`` is free text from the caller and ``details`` a flat object of
  strings, numbers, booleans or nulls. **Callers must not put personal data in
  either** (no names, e-mails, subject ids, token values, raw request bodies):
  the audit topic is kept forever and an erasure never touches it.
- ``prev`` is the ``hash`` of the previous record of the same chain (64 zeros
  for seq 0); ``hash`` is the hex SHA-256 of the canonical bytes of the record
  without ``hash`` and ``sig``: ``json.dumps(obj, sort_keys=True,
  separators=(",", ":"), ensure_ascii=False).encode()`` (``canonical()``).
- ``anchor`` (optional, only on seq 0): ``{"chain", "seq", "hash"}`` of the
  last authenticated record in the topic when the chain started. It ties a
  new chain to the history before it, so removing the records another chain
  was started after is detected too.

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
from streams.audit.signing import Keyring, PublicKey, Signer, canonical, is_kid, is_signature, is_writer
from streams.tenancy.names import is_valid_tenant_name

RECORD_VERSION = 2  # 2: signed (writer, kid, sig). Version 1 (unsigned) is refused: there was no production data.
GENESIS_PREV = "0" * 64
DEFAULT_TRAIL = "audit"  # the trail (audit topic) name a record is signed for, unless told otherwise
REQUIRED_FIELDS = frozenset({"v", "chain", "seq", "at_ms", "actor", "action", "tenant", "subject", "reason",
                             "details", "prev", "writer", "kid", "hash", "sig"})
OPTIONAL_FIELDS = frozenset({"anchor"})

MAX_TEXT = 1000  # actor, chain, reason, each detail value: audit records stay small
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
_PSEUDONYM_RE = re.compile(r"^p_[0-9a-f]{24}$")
_ACTION_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")

Position = Sequence[int]  # (partition, offset)


# ---------------------------------------------------------------- encoding

def record_hash(record: Mapping[str, Any]) -> str:
    """Hex SHA-256 of the canonical bytes of ``record`` without its ``hash`` and ``sig`` fields."""
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k not in ("hash", "sig")})).hexdigest()


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
    if not is_writer(record["writer"]):
        return "writer is not a writer id (<kind>:<name>)"
    if not is_kid(record["kid"]):
        return "kid is not 16 lowercase hex characters"
    if not is_signature(record["sig"]):
        return "sig is not a base64url Ed25519 signature"
    if "anchor" in record:
        if record["seq"] != 0:
            return "has an anchor but is not seq 0"
        problem = _anchor_problem(record["anchor"])
        if problem:
            return problem
    return None


# ---------------------------------------------------------------- writing

def authentication_problem(record: Mapping[str, Any], keyring: Mapping[str, PublicKey], trail: str) -> str | None:
    """Why a well-formed record with a matching hash is not authentic, or None when its signature verifies.

    The record's ``kid`` must be in ``keyring``, belong to the record's ``writer``, and its public key
    must verify ``sig`` over the record and ``trail``.
    """
    key = keyring.get(record["kid"])
    if key is None:
        return f"is signed with key {record['kid']}, which is not in the keyring (unknown writer)"
    if key.writer != record["writer"]:
        return f"claims writer {record['writer']}, but key {key.kid} is writer {key.writer}'s"
    if not key.verifies(record, trail):
        return (f"has a signature that does not verify with key {key.kid} of writer {key.writer} "
                f"for trail {trail} (forged, or signed for another trail)")
    return None


class AuditChain:
    """One writer's chain: its id and head (last seq and hash); builds and signs the next record.

    ``signer`` is the writer's current key (``streams.audit.signing.Signer``);
    ``trail`` the name of the audit topic the records are signed for. Not
    thread-safe and does no I/O; ``AuditLog`` serializes appends and writes.
    """

    def __init__(self, chain_id: str, signer: Signer, anchor: Mapping[str, Any] | None = None, *,
                 trail: str = DEFAULT_TRAIL) -> None:
        problem = _text_problem("chain id", chain_id)
        if problem:
            raise AuditError(problem)
        if not isinstance(signer, Signer):
            raise AuditError("an audit chain needs its writer's signer: records are always signed")
        if anchor is not None:
            anchor = {"chain": anchor["chain"], "seq": anchor["seq"], "hash": anchor["hash"]}
            problem = _anchor_problem(anchor)
            if problem:
                raise AuditError(problem)
        self.chain_id = chain_id
        self.signer = signer
        self.trail = trail
        self.anchor = anchor
        self.seq = -1  # last seq written; -1 before the first record
        self.head_hash = GENESIS_PREV

    @property
    def head(self) -> tuple[int, str]:
        """(seq, hash) of the last record of the chain; (-1, 64 zeros) when it has none yet."""
        return self.seq, self.head_hash

    @classmethod
    def resume(cls, last_record: Mapping[str, Any], signer: Signer, *, trail: str = DEFAULT_TRAIL,
               keyring: Mapping[str, PublicKey] | None = None) -> "AuditChain":
        """Continue the chain of ``last_record`` (its last record, read back after a restart).

        Only a chain of ``signer``'s own writer, from a record that authenticates
        (with ``keyring``, or else with the signer's own current key): a forged
        record carrying the chain's id is never continued.
        """
        problem = malformed(dict(last_record))
        if problem:
            raise AuditError(f"cannot resume from a record that {problem}")
        if record_hash(last_record) != last_record["hash"]:
            raise AuditError(f"cannot resume chain {last_record['chain']}: its last record (seq "
                             f"{last_record['seq']}) does not match its hash")
        if last_record["writer"] != signer.writer:
            raise AuditError(f"cannot resume chain {last_record['chain']}: it is writer "
                             f"{last_record['writer']}'s, not {signer.writer}'s")
        problem = authentication_problem(last_record, keyring if keyring is not None else
                                         {signer.kid: signer.public}, trail)
        if problem:
            raise AuditError(f"cannot resume chain {last_record['chain']}: its last record {problem}")
        chain = cls(last_record["chain"], signer, trail=trail)
        chain.seq = last_record["seq"]
        chain.head_hash = last_record["hash"]
        return chain

    def build(self, actor: str, action: str, tenant: str | None, subject_pseudonym: str | None,
              reason: str, details: Mapping[str, Any] | None = None, at_ms: int | None = None) -> dict[str, Any]:
        """The next record, hashed and signed, without advancing the head (``advance`` does, once it is written)."""
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
            "writer": self.signer.writer,
            "kid": self.signer.kid,
        }
        if self.seq == -1 and self.anchor is not None:
            record["anchor"] = dict(self.anchor)
        # Checked before anything is hashed or written: a record verify would call foreign is refused.
        problem = malformed({**record, "hash": GENESIS_PREV, "sig": "A" * 86})
        if problem:
            raise AuditError(f"refusing an audit record: {problem}")
        record["hash"] = record_hash(record)
        record["sig"] = self.signer.sign(record, self.trail)
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


def verify(records: Iterable[tuple[Position, Any]], keyring: Mapping[str, PublicKey],
           trail: str = DEFAULT_TRAIL) -> VerifyReport:
    """Check a whole audit trail given as ``(position, record)`` in topic order.

    ``position`` is ``(partition, offset)``; ``record`` the decoded JSON (None
    for a message that is not JSON); ``keyring`` the published public keys
    (``streams.audit.signing.Keyring``); ``trail`` the name the records were
    signed for (the audit topic's). The rules are in the module docstring.
    """
    report = VerifyReport()
    found: list[tuple[int, AuditChainBroken]] = []
    by_chain: dict[str, list[_Entry]] = defaultdict(list)
    chain_writer: dict[str, str] = {}
    unknown: dict[str, list[_Entry]] = defaultdict(list)  # chain -> records signed by keys not in the keyring

    def brk(kind: str, e: _Entry, detail: str) -> None:
        found.append((e.index, AuditChainBroken(kind, e.partition, e.offset, e.seq, e.record["chain"], detail)))

    for index, (pos, rec) in enumerate(records):
        report.records += 1
        partition, offset = int(pos[0]), int(pos[1])
        if isinstance(rec, dict) and "sig" not in rec and "chain" in rec:  # an audit record, unsigned
            chain, seq = _claimed(rec)
            found.append((index, AuditChainBroken(
                "forged", partition, offset, seq, chain,
                "is not signed: every audit record must carry its writer's signature (unsigned records are "
                "not accepted)")))
            continue
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
            # Its signature cannot verify either; "modified" says more. It still holds its place in its chain.
            brk("modified", e, f"was modified: stored hash {rec['hash']} != computed {computed}")
            by_chain[rec["chain"]].append(e)
            continue
        # Authenticated or left out: a record nobody with a key signed takes no part in the chains, so a
        # forgery can neither displace a genuine record nor hide behind one.
        if rec["kid"] not in keyring:
            unknown[rec["chain"]].append(e)
            continue
        problem = authentication_problem(rec, keyring, trail)
        if problem:
            brk("forged", e, problem)
            continue
        owner = chain_writer.setdefault(rec["chain"], rec["writer"])
        if owner != rec["writer"]:
            brk("foreign", e, f"is signed by writer {rec['writer']}, but chain {rec['chain']} is writer {owner}'s")
            continue
        by_chain[rec["chain"]].append(e)
        report.head = rec["hash"]

    for chain, entries in unknown.items():
        first = entries[0]
        claimed = sorted({x.record["writer"] for x in entries})
        kids = sorted({x.record["kid"] for x in entries})
        what = ("starts a chain from an unknown writer" if chain not in by_chain
                else "is one of the records of this chain from an unknown writer")
        brk("unknown-writer", first,
            f"{what}: {len(entries)} record{'s' if len(entries) != 1 else ''} claiming writer "
            f"{', '.join(claimed)} signed with key{'s' if len(kids) != 1 else ''} {', '.join(kids)}, which the "
            "keyring does not hold (not authenticated: not part of the trail)")

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
        kids = tuple(dict.fromkeys(x.record["kid"] for x in by_chain[chain] if not x.modified))
        writer = chain_writer.get(chain) or last.record["writer"]
        report.chains[chain] = ChainHead(last.seq, last.hash, last.partition, last.offset, len(by_chain[chain]),
                                         writer, kids)
    return report
