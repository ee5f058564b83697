"""The audit trail's records, their hash chain and signatures: pure logic, no I/O.

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

Verification
------------
``verify`` (in ``streams.audit.verify``, re-exported here) checks a whole
trail and names every break with the position of the record where it shows;
its module docstring says what it can and cannot tell. The format rules
(well-formedness, hash, authentication) are in ``streams.audit.record``,
also re-exported here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any, Mapping

from streams.audit.exceptions import AuditError
from streams.audit.record import (  # re-exported: the record's rules were defined here first
    DEFAULT_TRAIL,
    GENESIS_PREV,
    MAX_TEXT,
    OPTIONAL_FIELDS,
    RECORD_VERSION,
    REQUIRED_FIELDS,
    _anchor_problem,
    _details_problem,  # noqa: F401  (tests check details with it)
    _text_problem,
    authentication_problem,
    malformed,
    record_hash,
)
from streams.audit.signing import PublicKey, Signer, canonical
from streams.audit.verify import ChainHead, VerifyReport, verify  # re-exported: verify lived here

__all__ = [
    "DEFAULT_TRAIL", "GENESIS_PREV", "MAX_TEXT", "OPTIONAL_FIELDS", "RECORD_VERSION", "REQUIRED_FIELDS",
    "AuditChain", "ChainHead", "VerifyReport", "authentication_problem", "canonical", "decode_record",
    "encode_record", "malformed", "new_chain_id", "pseudonym", "record_hash", "verify",
]


# ---------------------------------------------------------------- encoding

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


# ---------------------------------------------------------------- writing

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
