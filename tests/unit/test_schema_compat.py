"""`streams schemas compat`: each rule's refusal names the schema, the version and the field; a waiver is honoured."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from streams.privacy.transforms import BUILTINS
from streams.privacy.weakening import strength, treatments
from streams.schema.clean import derive_clean_source
from streams.schema.compat import Versions, avro_problems, check
from streams.schema.registry import make_entry

REPO = Path(__file__).resolve().parents[2]


def _v1(event_type: str) -> dict:
    return json.loads((REPO / "schemas" / event_type / "v1.avsc").read_text())


def _clean(raw: Versions) -> Versions:
    return {t: {v: derive_clean_source(make_entry(s)) for v, s in vs.items()} for t, vs in raw.items()}


def _field(source: dict, name: str) -> dict:
    return next(f for f in source["fields"] if f["name"] == name)


def _problems(base_raw: Versions, raw: Versions) -> list[str]:
    """The problems of ``raw`` (its clean versions derived) against ``base_raw`` (likewise), as printed."""
    return [str(p) for p in check(base_raw, _clean(base_raw), raw, _clean(raw))]


def _evolve(event_type: str, change) -> tuple[Versions, Versions]:
    """(the repo's v1 alone, v1 plus a v2 made by ``change(copy of v1)``)."""
    v1 = _v1(event_type)
    v2 = copy.deepcopy(v1)
    change(v2)
    return {event_type: {1: v1}}, {event_type: {1: v1, 2: v2}}


# ------------------------------------------------------------------ compatible changes pass


def test_the_published_schemas_against_themselves():
    raw = {t: {1: _v1(t)} for t in ("customer_signup", "order_placed", "support_message")}
    assert _problems(raw, raw) == []
    assert _problems({}, raw) == []  # every version new: each checked against the earlier ones (none)


def test_an_optional_field_with_a_default_is_compatible():
    base, now = _evolve("customer_signup", lambda s: s["fields"].append(
        {"name": "loyalty_tier", "type": ["null", "string"], "default": None}))
    assert _problems(base, now) == []


def test_a_stronger_treatment_needs_no_waiver():
    base, now = _evolve("customer_signup", lambda s: _field(s, "email").update(transform="hash"))
    assert _problems(base, now) == []


# ------------------------------------------------------------------ raw: backward, transitively


def test_a_new_field_without_a_default_is_refused_naming_it():
    base, now = _evolve("customer_signup", lambda s: s["fields"].append({"name": "loyalty_tier", "type": "string"}))
    assert _problems(base, now)[0].startswith(
        "customer_signup v2 field 'loyalty_tier': cannot read events written with v1: reader_field_missing_default_value")


def test_a_type_change_is_refused_naming_the_field():
    base, now = _evolve("customer_signup", lambda s: _field(s, "country").update(type="int"))
    problems = _problems(base, now)
    assert problems[0] == ("customer_signup v2 field 'country': cannot read events written with v1: type_mismatch "
                           "(reader type: int not compatible with writer type: string)")


def test_a_nested_field_is_named_by_its_path():
    def change(s):
        item = _field(s, "items")["type"]["items"]
        _field(item, "quantity")["type"] = "string"
        _field(_field(s, "shipping_address")["type"], "country")["type"] = "int"

    base, now = _evolve("order_placed", change)
    raw = [p for p in _problems(base, now) if p.startswith("order_placed v2")]
    assert any(p.startswith("order_placed v2 field 'items[].quantity': cannot read") for p in raw), raw
    assert any(p.startswith("order_placed v2 field 'shipping_address.country': cannot read") for p in raw), raw


def test_every_earlier_version_is_checked_not_only_the_last():
    v1 = _v1("customer_signup")
    v2 = copy.deepcopy(v1)
    v2["fields"] = [f for f in v2["fields"] if f["name"] != "country"]  # v2 no longer writes country
    v3 = copy.deepcopy(v1)
    _field(v3, "country")["type"] = ["null", "string"]  # ... and v3 needs it again, with no default
    base = {"customer_signup": {1: v1, 2: v2}}
    problems = _problems(base, {"customer_signup": {1: v1, 2: v2, 3: v3}})
    assert any(p.startswith("customer_signup v3 field 'country': cannot read events written with v2") for p in problems)
    assert not any("written with v1" in p for p in problems)


# ------------------------------------------------------------------ clean: full, transitively


def test_a_clean_change_not_forward_compatible_is_refused_naming_the_field():
    # Removing a non-null tokenized field that had a default is fine for the raw reader, but its clean
    # field has no default (the token replaces the raw default): a v1 consumer cannot read v2 events.
    def with_default(s):
        _field(s, "email")["default"] = ""

    v1 = _v1("customer_signup")
    with_default(v1)
    v2 = copy.deepcopy(v1)
    v2["fields"] = [f for f in v2["fields"] if f["name"] != "email"]
    problems = _problems({"customer_signup": {1: v1}}, {"customer_signup": {1: v1, 2: v2}})
    assert problems == [
        "clean/customer_signup v2 field 'email': not forward compatible with clean v1 (a v1 reader cannot read v2 "
        "events): reader_field_missing_default_value (a field without a default that the other version does not "
        "write)"]


def test_a_new_non_null_personal_data_field_is_refused_for_its_clean_version_only():
    # Its raw default makes the raw change backward compatible, but the clean field (a token) has no
    # default: a clean v2 reader cannot read v1 events. Nullable with a null default passes (README).
    field = {"name": "work_email", "type": "string", "default": "", "pii": "email", "transform": "tokenize"}
    base, now = _evolve("customer_signup", lambda s: s["fields"].append(dict(field)))
    assert _problems(base, now) == [
        "clean/customer_signup v2 field 'work_email': not backward compatible with clean v1 (a v2 reader cannot "
        "read v1 events): reader_field_missing_default_value (a field without a default that the other version "
        "does not write)"]
    base, now = _evolve("customer_signup", lambda s: s["fields"].append(dict(field, type=["null", "string"],
                                                                             default=None)))
    assert _problems(base, now) == []


def test_a_clean_change_not_backward_compatible_is_refused_too():
    base, now = _evolve("customer_signup", lambda s: _field(s, "country").update(type="int"))
    clean = [p for p in _problems(base, now) if p.startswith("clean/")]
    assert any("field 'country': not backward compatible with clean v1" in p for p in clean), clean
    assert any("field 'country': not forward compatible with clean v1" in p for p in clean), clean


# ------------------------------------------------------------------ published versions are kept


def test_a_version_edited_in_place_is_refused():
    base = {"customer_signup": {1: _v1("customer_signup")}}
    edited = copy.deepcopy(base)
    _field(edited["customer_signup"][1], "country")["doc"] = "a new doc is an edit too"
    problems = _problems(base, edited)
    assert "customer_signup v1: published version edited in place: add v2 instead" in problems
    assert "clean/customer_signup v1: published version edited in place: add v2 instead" in problems


def test_a_removed_version_is_refused():
    base, now = _evolve("customer_signup", lambda s: s["fields"].append(
        {"name": "loyalty_tier", "type": ["null", "string"], "default": None}))
    problems = _problems(now, base)  # from v1+v2 back to v1 only
    assert problems[0].startswith("customer_signup v2: published version removed")
    assert any(p.startswith("clean/customer_signup v2: published version removed") for p in problems)


def test_a_removed_event_type_is_refused():
    raw = {t: {1: _v1(t)} for t in ("customer_signup", "order_placed")}
    assert _problems(raw, {"customer_signup": raw["customer_signup"]})[0].startswith(
        "order_placed v1: published version removed")


def test_a_gap_in_the_numbers_is_refused():
    v1 = _v1("customer_signup")
    problems = _problems({"customer_signup": {1: v1}}, {"customer_signup": {1: v1, 3: copy.deepcopy(v1)}})
    assert "customer_signup v2: version missing: versions are numbered v1..vN" in problems


def test_a_stale_or_missing_clean_version_is_refused():
    raw = {"customer_signup": {1: _v1("customer_signup")}}
    clean = _clean(raw)
    _field(clean["customer_signup"][1], "email")["doc"] = "hand-edited"
    problems = [str(p) for p in check(raw, _clean(raw), raw, clean)]
    assert any(p.startswith("clean/customer_signup v1: differs from the one derived from customer_signup v1") for p in problems)
    problems = [str(p) for p in check(raw, {}, raw, {})]
    assert problems == ["clean/customer_signup v1: missing: run `streams schemas derive`"]


# ------------------------------------------------------------------ privacy: no weakening without a waiver


@pytest.mark.parametrize("event_type,field,change,words", [
    ("customer_signup", "email", {"pii": "none"}, "from tokenize (2) to none (0)"),
    ("customer_signup", "email", {"transform": "mask"}, "from tokenize (2) to mask (1)"),
    ("support_message", "reply_to", {"transform": "tokenize"}, "from hash (3) to tokenize (2)"),
    ("support_message", "body", {"transform": "hash"}, "from redact (4) to hash (3)"),
], ids=["tokenize-none", "tokenize-mask", "hash-tokenize", "redact-hash"])
def test_a_weakened_treatment_is_refused_naming_the_field(event_type, field, change, words):
    def weaken(s):
        f = _field(s, field)
        f.update(change)
        if change.get("pii") == "none":
            f.pop("transform")

    base, now = _evolve(event_type, weaken)
    assert _problems(base, now) == [f"{event_type} v2 field '{field}': privacy treatment weakened {words} without a "
                                    "waiver (see README, 'Schema changes step by step')"]


def test_a_nested_weakened_field_is_named_by_its_path():
    base, now = _evolve("order_placed", lambda s: _field(_field(s, "shipping_address")["type"], "city").update(
        transform="mask", pii="postal_code"))
    assert _problems(base, now) == [
        "order_placed v2 field 'shipping_address.city': privacy treatment weakened from tokenize (2) to mask (1) "
        "without a waiver (see README, 'Schema changes step by step')"]


def test_a_dated_waiver_is_accepted():
    def weaken(s):
        _field(s, "reply_to")["transform"] = "tokenize"
        s["privacy_waivers"] = [{"field": "reply_to", "date": "2026-12-02",
                                 "reason": "support must answer by mail; DPO approved (ticket 4711)"}]

    base, now = _evolve("support_message", weaken)
    assert _problems(base, now) == []


def test_a_waiver_covers_only_its_field():
    def weaken(s):
        _field(s, "reply_to")["transform"] = "tokenize"
        _field(s, "body")["transform"] = "hash"
        s["privacy_waivers"] = [{"field": "reply_to", "date": "2026-12-02", "reason": "approved"}]

    base, now = _evolve("support_message", weaken)
    problems = _problems(base, now)
    assert len(problems) == 1 and problems[0].startswith("support_message v2 field 'body': privacy treatment weakened")


@pytest.mark.parametrize("waiver,words", [
    ({"field": "reply_to", "date": "2-12-2026", "reason": "x"}, "'date' must be YYYY-MM-DD"),
    ({"field": "reply_to", "date": "2026-02-30", "reason": "x"}, "'date' must be YYYY-MM-DD"),
    ({"field": "reply_to", "reason": "x"}, "'date' must be YYYY-MM-DD"),
    ({"field": "reply_to", "date": "2026-12-02", "reason": " "}, "needs a non-empty 'reason'"),
    ({"date": "2026-12-02", "reason": "x"}, "needs a 'field'"),
], ids=["date-order", "no-such-day", "no-date", "blank-reason", "no-field"])
def test_a_malformed_waiver_is_refused_and_waives_nothing(waiver, words):
    def weaken(s):
        _field(s, "reply_to")["transform"] = "tokenize"
        s["privacy_waivers"] = [waiver]

    base, now = _evolve("support_message", weaken)
    problems = _problems(base, now)
    assert any(words in p and p.startswith("support_message v2: 'privacy_waivers' #1") for p in problems), problems
    assert any(p.startswith("support_message v2 field 'reply_to': privacy treatment weakened") for p in problems)


def test_the_strength_order():
    by_name = {t.name: t.strength for t in BUILTINS}
    assert by_name == {"redact": 4, "hash": 3, "tokenize": 2, "mask": 1, "generalize": 1}
    assert strength("none") == 0 and strength("not-registered") == 0
    assert treatments(_v1("order_placed"))["shipping_address.street"] == "redact"
    assert treatments(_v1("order_placed"))["shipping_address"] == "none"


def test_avro_problems_of_identical_schemas():
    assert avro_problems(_v1("order_placed"), _v1("order_placed")) == []


# ------------------------------------------------------------------ the command


def run(*argv: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "streams.cli.main", *argv], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=60)


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false",
                    *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _in_git(path: Path) -> bool:
    return subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=path, capture_output=True).returncode == 0


needs_git_checkout = pytest.mark.skipif(not _in_git(REPO), reason="this tree is not a git checkout (an exported "
                                        "copy): there is no history to compare the schemas with")


@needs_git_checkout
def test_the_repository_passes_against_its_previous_commit():
    # A clone without history (CI's shallow checkout) has no HEAD~1: the command says so and compares
    # against HEAD, which is then the whole check this test can make.
    r = run("schemas", "compat")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("schemas compatible with HEAD")
    if "no HEAD~1" not in r.stderr:
        assert r.stdout.strip() == "schemas compatible with HEAD~1"


@pytest.fixture()
def repo(tmp_path) -> Path:
    """A git repository with the published schemas in one commit."""
    root = tmp_path / "repo"
    shutil.copytree(REPO / "schemas", root / "schemas")
    _git(tmp_path, "init", "-q", str(root))
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "schemas")
    return root


def _add_v2(root: Path, change) -> None:
    v2 = _v1("support_message")
    change(v2)
    (root / "schemas" / "support_message" / "v2.avsc").write_text(json.dumps(v2, indent=2))
    clean = derive_clean_source(make_entry(v2))
    (root / "schemas" / "clean" / "support_message" / "v2.avsc").write_text(json.dumps(clean, indent=2) + "\n")


def test_a_first_commit_is_compared_with_head(repo):
    r = run("schemas", "compat", env={"STREAMS_SCHEMAS_DIR": str(repo / "schemas")})
    assert (r.returncode, r.stdout.strip()) == (0, "schemas compatible with HEAD"), r.stderr
    assert "no HEAD~1" in r.stderr


def test_an_incompatible_change_is_status_1_one_line_each(repo):
    _add_v2(repo, lambda s: (_field(s, "reply_to").update(transform="tokenize"),
                             s["fields"].append({"name": "priority", "type": "int"})))
    r = run("schemas", "compat", "--against", "HEAD", env={"STREAMS_SCHEMAS_DIR": str(repo / "schemas")})
    assert r.returncode == 1, r.stderr
    lines = r.stdout.splitlines()
    assert "support_message v2 field 'priority': cannot read events written with v1: " \
           "reader_field_missing_default_value (a field without a default that the other version does not write)" in lines
    assert any(line.startswith("support_message v2 field 'reply_to': privacy treatment weakened") for line in lines)
    assert any(line.startswith("clean/support_message v2 field 'priority': not backward compatible") for line in lines)
    assert r.stderr.strip() == f"{len(lines)} incompatible changes against HEAD"


def test_a_committed_change_is_checked_against_head_1(repo):
    _add_v2(repo, lambda s: s["fields"].append({"name": "priority", "type": ["null", "int"], "default": None}))
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "v2")
    r = run("schemas", "compat", env={"STREAMS_SCHEMAS_DIR": str(repo / "schemas")})
    assert (r.returncode, r.stdout.strip(), r.stderr) == (0, "schemas compatible with HEAD~1", "")
    (repo / "schemas" / "support_message" / "v1.avsc").unlink()
    r = run("schemas", "compat", env={"STREAMS_SCHEMAS_DIR": str(repo / "schemas")})
    assert r.returncode == 1 and r.stdout.startswith("support_message v1: published version removed")


def test_a_change_is_checked_against_the_layout_before_versions(tmp_path):
    # A ref from before versioning (schemas/<type>.avsc) counts each file as v1: moving it is no change.
    root = tmp_path / "old"
    for p in (REPO / "schemas").glob("**/v1.avsc"):
        flat = root / p.relative_to(REPO).parent.with_suffix(".avsc")
        flat.parent.mkdir(parents=True, exist_ok=True)
        flat.write_text(p.read_text())
    _git(tmp_path, "init", "-q", str(root))
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "flat")
    shutil.rmtree(root / "schemas")
    shutil.copytree(REPO / "schemas", root / "schemas")
    r = run("schemas", "compat", "--against", "HEAD", env={"STREAMS_SCHEMAS_DIR": str(root / "schemas")})
    assert (r.returncode, r.stdout.strip()) == (0, "schemas compatible with HEAD"), r.stdout + r.stderr


@pytest.mark.parametrize("argv,words", [
    pytest.param(["schemas", "compat", "--against", "no-such-ref"], "no commit 'no-such-ref'", marks=needs_git_checkout),
    (["schemas", "list", "--against", "HEAD"], "--against is for `streams schemas compat`"),
], ids=["unknown-ref", "against-without-compat"])
def test_usage_errors_are_status_2(argv, words):
    r = run(*argv)
    assert r.returncode == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_outside_a_git_work_tree_is_status_2(tmp_path):
    shutil.copytree(REPO / "schemas", tmp_path / "schemas")
    r = run("schemas", "compat", env={"STREAMS_SCHEMAS_DIR": str(tmp_path / "schemas"), "GIT_CEILING_DIRECTORIES":
                                      str(tmp_path.parent)})
    assert r.returncode == 2 and "git" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_the_readme_table_gives_each_transforms_strength():
    readme = (REPO / "README.md").read_text()
    table = readme.split("### The schema is the policy", 1)[1].split("\n\n", 3)[2]
    rows = re.findall(r"^\| `([a-z_]+)` \|.*\| (\d) \|$", table, re.M)
    assert {name: int(level) for name, level in rows} == {t.name: t.strength for t in BUILTINS}
