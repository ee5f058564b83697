"""The audit hash chain and its signatures: building records, and verification naming what broke and where."""

from __future__ import annotations

import base64
import copy
import json

import pytest

from streams.audit.chain import (
    GENESIS_PREV,
    AuditChain,
    canonical,
    decode_record,
    encode_record,
    pseudonym,
    record_hash,
)
from streams.audit.chain import verify as _verify
from streams.audit.exceptions import AuditChainBroken, AuditError
from streams.audit.signing import Keyring, Signer, signing_input

SECRET = b"k" * 32
SUBJECT = "u-1001"
SIGNER = Signer.generate("worker:test")
OPS = Signer.generate("cli:ops")
KEYRING = Keyring({SIGNER.kid: SIGNER.public, OPS.kid: OPS.public})


def verify(records, keyring=KEYRING, trail="audit"):
    return _verify(records, keyring, trail)


def _resign(record: dict, signer: Signer = SIGNER) -> dict:
    """What only a holder of the writer's key can do: recompute the hash and sign again."""
    record["hash"] = record_hash(record)
    record["sig"] = signer.sign(record, "audit")
    return record


def _chain(n: int, chain_id: str = "worker:test:1", start_ms: int = 1_700_000_000_000,
           signer: Signer = SIGNER) -> list[dict]:
    c = AuditChain(chain_id, signer)
    p = pseudonym("acme", SUBJECT, SECRET)
    return [c.append("worker:test", "detokenize", "acme", p, f"ticket {i}", {"fields": 2, "step": f"s{i}"},
                     at_ms=start_ms + i) for i in range(n)]


def _positioned(records: list[dict], start: int = 0) -> list[tuple[tuple[int, int], dict]]:
    return [((0, start + i), r) for i, r in enumerate(records)]


def _only_break(report) -> AuditChainBroken:
    assert not report.ok
    assert len(report.breaks) == 1, [str(b) for b in report.breaks]
    return report.breaks[0]


# ---------------------------------------------------------------- records

def test_record_fields_hash_and_links():
    records = _chain(3)
    assert [r["seq"] for r in records] == [0, 1, 2]
    assert records[0]["prev"] == GENESIS_PREV
    assert records[1]["prev"] == records[0]["hash"] and records[2]["prev"] == records[1]["hash"]
    r = records[1]
    assert set(r) == {"v", "chain", "seq", "at_ms", "actor", "action", "tenant", "subject", "reason", "details",
                      "prev", "writer", "kid", "hash", "sig"}
    assert (r["v"], r["writer"], r["kid"]) == (2, "worker:test", SIGNER.kid)
    body = {k: v for k, v in r.items() if k not in ("hash", "sig")}
    expected = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert canonical(body) == expected
    import hashlib
    assert r["hash"] == hashlib.sha256(expected).hexdigest() == record_hash(r)
    assert decode_record(encode_record(r)) == r


def test_head_advances_and_resume_continues():
    c = AuditChain("cli:ops:abc", OPS)
    assert c.head == (-1, GENESIS_PREV)
    a = c.append("cli:ops", "erasure.step", "acme", None, "step 1")
    b = c.append("cli:ops", "erasure.step", "acme", None, "step 2")
    assert c.head == (1, b["hash"])
    resumed = AuditChain.resume(b, OPS)
    assert resumed.chain_id == "cli:ops:abc" and resumed.head == (1, b["hash"])
    c2 = resumed.append("cli:ops", "erasure.step", "acme", None, "step 3")
    assert (c2["seq"], c2["prev"]) == (2, b["hash"])
    assert verify(_positioned([a, b, c2])).ok


def test_resume_refuses_a_record_that_does_not_verify():
    last = _chain(2)[-1]
    last["reason"] = "edited"
    with pytest.raises(AuditError, match="does not match its hash"):
        AuditChain.resume(last, SIGNER)


def test_resume_refuses_another_writers_chain_and_a_forged_tail():
    last = _chain(2)[-1]
    with pytest.raises(AuditError, match="writer worker:test's, not cli:ops's"):
        AuditChain.resume(last, OPS)
    forged = dict(last, reason="planted by someone without the key")
    forged["hash"] = record_hash(forged)  # self-consistent, but the signature no longer matches
    with pytest.raises(AuditError, match="signature that does not verify"):
        AuditChain.resume(forged, SIGNER)
    with pytest.raises(AuditError, match="not in the keyring"):
        AuditChain.resume(last, SIGNER, keyring={OPS.kid: OPS.public})


@pytest.mark.parametrize("kwargs, message", [
    ({"subject_pseudonym": SUBJECT}, "subject is not a pseudonym"),
    ({"tenant": "Not A Tenant"}, "tenant is not a tenant name"),
    ({"details": {"nested": {"email": "x"}}}, "details.nested"),
    ({"details": {"ratio": float("nan")}}, "finite"),
    ({"action": "Detokenize Now"}, "action"),
])
def test_append_refuses_what_verify_would_call_foreign(kwargs, message):
    c = AuditChain("w:1", SIGNER)
    args = {"actor": "w", "action": "detokenize", "tenant": "acme", "subject_pseudonym": None, "reason": "r"}
    args.update(kwargs)
    with pytest.raises(AuditError, match=message):
        c.append(**args)
    assert c.head == (-1, GENESIS_PREV)  # nothing was appended


# ---------------------------------------------------------------- pseudonyms

def test_pseudonym_is_stable_and_keyed():
    p = pseudonym("acme", SUBJECT, SECRET)
    assert p == pseudonym("acme", SUBJECT, SECRET)
    assert p.startswith("p_") and len(p) == 26 and all(ch in "0123456789abcdef" for ch in p[2:])
    assert p != pseudonym("globex", SUBJECT, SECRET)
    assert p != pseudonym("acme", SUBJECT, b"j" * 32)
    assert p != pseudonym("acme", "u-1002", SECRET)
    assert SUBJECT not in p and "1001" not in p
    record = AuditChain("w:1", SIGNER).append("w", "detokenize", "acme", p, "r")
    assert SUBJECT not in encode_record(record).decode()


def test_pseudonym_refuses_a_weak_secret():
    with pytest.raises(ValueError):
        pseudonym("acme", SUBJECT, b"short")


# ---------------------------------------------------------------- verification

def test_intact_trail_verifies():
    records = _chain(5)
    report = verify(_positioned(records))
    assert report.ok and report.breaks == []
    assert report.records == 5
    assert report.head == records[-1]["hash"]
    head = report.chains["worker:test:1"]
    assert (head.seq, head.hash, head.offset, head.records) == (4, records[-1]["hash"], 4, 5)


def test_modified_field_is_named_at_its_position():
    records = _chain(6)
    records[3]["reason"] = "nothing to see"
    b = _only_break(verify(_positioned(records, start=10)))
    assert b.kind == "modified"
    assert b.position == (0, 13, 3)
    assert b.chain == "worker:test:1"
    assert "was modified: stored hash" in str(b) and record_hash(records[3]) in str(b)


def test_modified_into_a_raw_subject_is_still_modified():
    records = _chain(3)
    records[1]["subject"] = SUBJECT  # someone writes the real id back in
    b = _only_break(verify(_positioned(records)))
    assert (b.kind, b.offset, b.seq) == ("modified", 1, 1)
    assert "subject is not a pseudonym" in b.detail


def test_removed_record_is_a_gap():
    records = _chain(6)
    del records[2]
    b = _only_break(verify(_positioned(records)))
    assert b.kind == "removed"
    assert (b.offset, b.seq) == (2, 3)  # the record after the gap, now at offset 2
    assert "seq 2 missing" in b.detail


def test_removed_first_records():
    records = _chain(4)[2:]
    b = _only_break(verify(_positioned(records)))
    assert (b.kind, b.seq) == ("removed", 2)
    assert "seqs 0-1 missing" in b.detail


def test_removed_and_renumbered_is_a_prev_mismatch():
    """Drop seq 2, renumber seq 3 as 2 and recompute its hash: seqs continue, the link does not."""
    records = _chain(5)
    forged = copy.deepcopy(records[3])
    forged["seq"] = 2
    _resign(forged)  # a key holder: without the key the record is simply forged (see the signature tests)
    trail = [records[0], records[1], forged]
    b = _only_break(verify(_positioned(trail)))
    assert b.kind == "removed" and (b.offset, b.seq) == (2, 2)
    assert "chained to a record that is gone" in b.detail


def test_replaced_with_recomputed_hash_shows_at_the_next_record():
    records = _chain(4)
    records[1]["reason"] = "rewritten"
    _resign(records[1])
    b = _only_break(verify(_positioned(records)))
    assert b.kind == "removed" and (b.offset, b.seq) == (2, 2)


def test_swapped_records_are_reordered():
    records = _chain(6)
    records[3], records[4] = records[4], records[3]
    b = _only_break(verify(_positioned(records)))
    assert b.kind == "reordered"
    assert (b.offset, b.seq) == (4, 3)  # seq 3 now sits after seq 4
    assert "out of order" in b.detail


def test_record_moved_to_the_front_is_the_one_reported():
    records = _chain(6)
    trail = [records[0], records[5], *records[1:5]]
    b = _only_break(verify(_positioned(trail)))
    assert (b.kind, b.offset, b.seq) == ("reordered", 1, 5)


def test_interleaved_chains_verify():
    a = _chain(4, "worker:a:1")
    b = _chain(3, "cli:ops:2", signer=OPS)
    trail = [a[0], b[0], a[1], a[2], b[1], b[2], a[3]]
    report = verify(_positioned(trail))
    assert report.ok, [str(x) for x in report.breaks]
    assert set(report.chains) == {"worker:a:1", "cli:ops:2"}
    assert report.chains["worker:a:1"].writer == "worker:test" and report.chains["cli:ops:2"].writer == "cli:ops"
    assert report.chains["cli:ops:2"].kids == (OPS.kid,)
    assert report.chains["worker:a:1"].seq == 3 and report.chains["cli:ops:2"].seq == 2
    assert report.head == a[3]["hash"]
    # A break in one chain is attributed to that chain only.
    del trail[4]
    brk = _only_break(verify(_positioned(trail)))
    assert (brk.chain, brk.kind, brk.seq) == ("cli:ops:2", "removed", 2)


def test_second_record_for_a_seq_by_the_key_holder_is_foreign():
    records = _chain(3)
    forged = copy.deepcopy(records[1])
    forged["action"] = "consent.drop"
    _resign(forged)  # two processes writing with one chain id, or a writer rewriting its own history
    b = _only_break(verify(_positioned([*records, forged])))
    assert (b.kind, b.offset, b.seq) == ("foreign", 3, 1)
    assert "already holds" in b.detail


def test_copy_with_recomputed_hash_but_no_key_is_forged():
    records = _chain(3)
    forged = copy.deepcopy(records[1])
    forged["action"] = "consent.drop"
    forged["hash"] = record_hash(forged)
    b = _only_break(verify(_positioned([*records, forged])))
    assert (b.kind, b.offset, b.seq, b.chain) == ("forged", 3, 1, "worker:test:1")
    assert f"does not verify with key {SIGNER.kid} of writer worker:test" in b.detail


def test_exact_copy_is_foreign():
    records = _chain(3)
    b = _only_break(verify(_positioned([*records, dict(records[0])])))
    assert (b.kind, b.offset) == ("foreign", 3)
    assert "second copy" in b.detail


def test_garbage_is_foreign():
    records = _chain(2)
    trail = [((0, 0), records[0]), ((0, 1), None), ((0, 2), {"hello": "world"}), ((0, 3), records[1])]
    report = verify(trail)
    assert [(b.kind, b.offset, b.chain) for b in report.breaks] == [("foreign", 1, None), ("foreign", 2, None)]
    assert report.chains["worker:test:1"].records == 2
    assert "not a valid audit record" in report.breaks[0].detail


def test_anchor_ties_a_new_chain_to_the_history_before_it():
    a = _chain(3, "worker:a:1")
    last = a[-1]
    c = AuditChain("worker:b:2", OPS, anchor={"chain": last["chain"], "seq": last["seq"], "hash": last["hash"]})
    b = [c.append("cli:ops", "consent.drop", "acme", None, "opt-out") for _ in range(2)]
    assert b[0]["anchor"]["hash"] == last["hash"] and "anchor" not in b[1]
    assert verify(_positioned([*a, *b])).ok
    # Remove the anchored record (the tail of chain a, which a chain alone cannot notice).
    brk = _only_break(verify(_positioned([*a[:2], *b])))
    assert (brk.kind, brk.chain, brk.seq, brk.offset) == ("removed", "worker:b:2", 0, 2)
    assert "not in the trail" in brk.detail


def test_raise_if_broken_raises_the_first_break():
    records = _chain(4)
    records[2]["tenant"] = "globex"
    report = verify(_positioned(records))
    with pytest.raises(AuditChainBroken) as info:
        report.raise_if_broken()
    assert info.value.kind == "modified" and info.value.offset == 2
    assert verify(_positioned(_chain(2))).raise_if_broken() is None


# ---------------------------------------------------------------- signatures

ATTACKER = Signer.generate("worker:test")  # the attacker's own key pair, claiming a real writer


def _forged_chain(n: int, *, writer: str = "worker:test", kid: str = SIGNER.kid, signer: Signer | None = None,
                  chain_id: str = "worker:test:forged") -> list[dict]:
    """A self-consistent chain built by someone who can write the topic but holds no writer's key."""
    records, prev = [], GENESIS_PREV
    for i in range(n):
        r = {"v": 2, "chain": chain_id, "seq": i, "at_ms": 1_700_000_000_000 + i, "actor": "api:3f2a9c01b7de",
             "action": "detokenize" if i == 0 else "erasure.step", "tenant": "acme",
             "subject": pseudonym("acme", SUBJECT, SECRET), "reason": "support ticket", "details": {},
             "prev": prev, "writer": writer, "kid": kid}
        r["hash"] = record_hash(r)
        r["sig"] = signer.sign(r, "audit") if signer else "A" * 86
        records.append(r)
        prev = r["hash"]
    return records


def test_signature_covers_every_field_and_the_trail():
    r = _chain(1)[0]
    assert KEYRING[SIGNER.kid].verifies(r, "audit")
    assert not KEYRING[SIGNER.kid].verifies(r, "audit.staging")  # replay into another trail
    assert not KEYRING[OPS.kid].verifies(r, "audit")
    for field, value in [("kid", OPS.kid), ("writer", "cli:ops"), ("hash", "0" * 64), ("actor", "x")]:
        assert not KEYRING[SIGNER.kid].verifies(dict(r, **{field: value}), "audit"), field


def test_unsigned_record_is_forged():
    r = _chain(2)
    old = {k: v for k, v in r[1].items() if k not in ("sig", "writer", "kid")}
    old["v"] = 1  # the pre-signature format: not accepted any more
    report = verify(_positioned([r[0], old]))
    b = _only_break(report)
    assert (b.kind, b.offset, b.seq, b.chain) == ("forged", 1, 1, "worker:test:1")
    assert "is not signed" in b.detail


def test_forged_chain_blamed_on_a_real_key_id_is_rejected():
    genuine = _chain(3)
    forged = _forged_chain(2)  # names writer worker:test and its real kid; cannot sign
    report = verify(_positioned([*genuine, *forged]))
    assert [(b.kind, b.offset, b.chain) for b in report.breaks] == [
        ("forged", 3, "worker:test:forged"), ("forged", 4, "worker:test:forged")]
    assert "does not verify" in report.breaks[0].detail
    assert set(report.chains) == {"worker:test:1"}  # the forgery is not part of the trail
    assert report.head == genuine[-1]["hash"]


def test_forged_chain_signed_with_another_key_under_a_real_kid_is_rejected():
    forged = _forged_chain(2)
    for r in forged:  # a real Ed25519 signature, by the attacker's key, over records naming the real kid
        r["sig"] = base64.urlsafe_b64encode(ATTACKER._private.sign(signing_input(r, "audit"))).rstrip(b"=").decode()
    report = verify(_positioned(forged))
    assert [b.kind for b in report.breaks] == ["forged", "forged"]


def test_chain_from_an_unknown_writer_is_flagged_once_with_its_writer():
    genuine = _chain(2)
    outsider = _forged_chain(3, kid=ATTACKER.kid, signer=ATTACKER)  # validly signed, by a key nobody published
    report = verify(_positioned([*genuine, *outsider]))
    b = _only_break(report)
    assert (b.kind, b.offset, b.chain, b.seq) == ("unknown-writer", 2, "worker:test:forged", 0)
    assert "starts a chain from an unknown writer: 3 records claiming writer worker:test" in b.detail
    assert ATTACKER.kid in b.detail
    assert set(report.chains) == {"worker:test:1"}
    # Published, the same chain verifies: it is the keyring that decides who is a writer.
    assert verify(_positioned([*genuine, *outsider]), Keyring({**KEYRING, ATTACKER.kid: ATTACKER.public})).ok


def test_record_naming_a_writer_whose_key_it_is_not_is_forged():
    r = _forged_chain(1, writer="cli:ops", kid=OPS.kid)[0]
    r["writer"], r["kid"] = "cli:ops", SIGNER.kid  # worker:test's real key, claimed for cli:ops
    r["hash"] = record_hash(r)
    b = _only_break(verify(_positioned([r])))
    assert b.kind == "forged" and "claims writer cli:ops, but key" in b.detail


def test_another_writers_record_in_a_chain_is_foreign():
    a = _chain(2)
    intruder = AuditChain("worker:test:1", OPS)  # a real writer, appending to someone else's chain
    intruder.seq, intruder.head_hash = 1, a[1]["hash"]
    c = intruder.append("cli:ops", "detokenize", "acme", None, "r")
    b = _only_break(verify(_positioned([*a, c])))
    assert (b.kind, b.offset) == ("foreign", 2)
    assert "is signed by writer cli:ops, but chain worker:test:1 is writer worker:test's" in b.detail


def test_modified_signed_record_is_modified_not_forged():
    records = _chain(3)
    records[1]["actor"] = "api:someone-else"
    b = _only_break(verify(_positioned(records)))
    assert (b.kind, b.offset) == ("modified", 1)


def test_replayed_genuine_record_is_a_second_copy():
    records = _chain(3)
    b = _only_break(verify(_positioned([*records, copy.deepcopy(records[1])])))
    assert (b.kind, b.offset, b.seq) == ("foreign", 3, 1) and "second copy" in b.detail


def test_removed_record_of_a_signed_chain_is_detected():
    records = _chain(4)
    b = _only_break(verify(_positioned([records[0], records[2], records[3]])))
    assert (b.kind, b.seq) == ("removed", 2)


def test_reordered_records_of_a_signed_chain_are_detected():
    records = _chain(4)
    b = _only_break(verify(_positioned([records[0], records[2], records[1], records[3]])))
    assert (b.kind, b.seq) == ("reordered", 1)


def test_rotation_keeps_old_records_valid_and_a_chain_may_span_keys():
    old = Signer.generate("worker:rot")
    new = Signer.generate("worker:rot")
    c = AuditChain("worker:rot:1", old)
    first = c.append("worker:rot", "detokenize", "acme", None, "before rotation")
    resumed = AuditChain.resume(first, new, keyring={old.kid: old.public, new.kid: new.public})
    second = resumed.append("worker:rot", "detokenize", "acme", None, "after rotation")
    assert (first["kid"], second["kid"]) == (old.kid, new.kid)
    both = Keyring({old.kid: old.public, new.kid: new.public})
    report = verify(_positioned([first, second]), both)
    assert report.ok and report.chains["worker:rot:1"].kids == (old.kid, new.kid)
    # Drop the retired key from the keyring and what it signed is no longer authenticated.
    report = verify(_positioned([first, second]), Keyring({new.kid: new.public}))
    assert [(b.kind, b.offset) for b in report.breaks] == [("unknown-writer", 0), ("removed", 1)]


def test_signer_signs_only_records_that_name_it():
    r = _chain(1)[0]
    with pytest.raises(AuditError, match="only by the writer and key it names"):
        OPS.sign(r, "audit")
    assert "private" not in repr(SIGNER) and SIGNER.kid in repr(SIGNER)


def test_chain_needs_a_signer():
    with pytest.raises(AuditError, match="always signed"):
        AuditChain("w:1", None)  # type: ignore[arg-type]


def test_keyring_round_trip_and_integrity():
    text = KEYRING.dumps()
    assert "private" not in text
    again = Keyring.loads(text)
    assert set(again) == set(KEYRING) and again[SIGNER.kid] == SIGNER.public
    assert again.writers() == {"worker:test", "cli:ops"}
    import json as _json
    doc = _json.loads(text)
    doc["keys"][0]["kid"] = "0" * 16  # a key under a kid that is not its fingerprint
    with pytest.raises(AuditError, match="does not match its kid"):
        Keyring.loads(_json.dumps(doc))
    with pytest.raises(AuditError):
        Keyring.loads("{}")


def test_writer_ids():
    from streams.audit.keys import default_writer
    from streams.audit.signing import writer_name

    assert default_writer("worker:streams-pipeline") == "worker:streams-pipeline"
    assert default_writer("test:api") == "test:api"
    assert default_writer("streams") == "process:streams"
    assert writer_name("cli", "Jane Doe/../x") == "cli:Jane-Doe-..-x"
    with pytest.raises(AuditError):
        Signer.generate("no writer")
