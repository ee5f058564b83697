"""The audit hash chain: building records, and verification naming what broke and where."""

from __future__ import annotations

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
    verify,
)
from streams.audit.exceptions import AuditChainBroken, AuditError

SECRET = b"k" * 32
SUBJECT = "u-1001"


def _chain(n: int, chain_id: str = "worker:test:1", start_ms: int = 1_700_000_000_000) -> list[dict]:
    c = AuditChain(chain_id)
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
                      "prev", "hash"}
    body = {k: v for k, v in r.items() if k != "hash"}
    expected = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert canonical(body) == expected
    import hashlib
    assert r["hash"] == hashlib.sha256(expected).hexdigest() == record_hash(r)
    assert decode_record(encode_record(r)) == r


def test_head_advances_and_resume_continues():
    c = AuditChain("cli:ops:abc")
    assert c.head == (-1, GENESIS_PREV)
    a = c.append("cli:ops", "erasure.step", "acme", None, "step 1")
    b = c.append("cli:ops", "erasure.step", "acme", None, "step 2")
    assert c.head == (1, b["hash"])
    resumed = AuditChain.resume(b)
    assert resumed.chain_id == "cli:ops:abc" and resumed.head == (1, b["hash"])
    c2 = resumed.append("cli:ops", "erasure.step", "acme", None, "step 3")
    assert (c2["seq"], c2["prev"]) == (2, b["hash"])
    assert verify(_positioned([a, b, c2])).ok


def test_resume_refuses_a_record_that_does_not_verify():
    last = _chain(2)[-1]
    last["reason"] = "edited"
    with pytest.raises(AuditError, match="does not match its hash"):
        AuditChain.resume(last)


@pytest.mark.parametrize("kwargs, message", [
    ({"subject_pseudonym": SUBJECT}, "subject is not a pseudonym"),
    ({"tenant": "Not A Tenant"}, "tenant is not a tenant name"),
    ({"details": {"nested": {"email": "x"}}}, "details.nested"),
    ({"details": {"ratio": float("nan")}}, "finite"),
    ({"action": "Detokenize Now"}, "action"),
])
def test_append_refuses_what_verify_would_call_foreign(kwargs, message):
    c = AuditChain("w:1")
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
    record = AuditChain("w:1").append("w", "detokenize", "acme", p, "r")
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
    forged["hash"] = record_hash(forged)
    trail = [records[0], records[1], forged]
    b = _only_break(verify(_positioned(trail)))
    assert b.kind == "removed" and (b.offset, b.seq) == (2, 2)
    assert "chained to a record that is gone" in b.detail


def test_replaced_with_recomputed_hash_shows_at_the_next_record():
    records = _chain(4)
    records[1]["reason"] = "rewritten"
    records[1]["hash"] = record_hash(records[1])
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
    b = _chain(3, "cli:ops:2")
    trail = [a[0], b[0], a[1], a[2], b[1], b[2], a[3]]
    report = verify(_positioned(trail))
    assert report.ok, [str(x) for x in report.breaks]
    assert set(report.chains) == {"worker:a:1", "cli:ops:2"}
    assert report.chains["worker:a:1"].seq == 3 and report.chains["cli:ops:2"].seq == 2
    assert report.head == a[3]["hash"]
    # A break in one chain is attributed to that chain only.
    del trail[4]
    brk = _only_break(verify(_positioned(trail)))
    assert (brk.chain, brk.kind, brk.seq) == ("cli:ops:2", "removed", 2)


def test_forged_copy_with_recomputed_hash_is_foreign():
    records = _chain(3)
    forged = copy.deepcopy(records[1])
    forged["action"] = "consent.drop"
    forged["hash"] = record_hash(forged)
    b = _only_break(verify(_positioned([*records, forged])))
    assert (b.kind, b.offset, b.seq) == ("foreign", 3, 1)
    assert "already holds" in b.detail


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
    assert "not a valid audit record" in report.breaks[0].detail


def test_anchor_ties_a_new_chain_to_the_history_before_it():
    a = _chain(3, "worker:a:1")
    last = a[-1]
    c = AuditChain("worker:b:2", anchor={"chain": last["chain"], "seq": last["seq"], "hash": last["hash"]})
    b = [c.append("worker:b", "consent.drop", "acme", None, "opt-out") for _ in range(2)]
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
