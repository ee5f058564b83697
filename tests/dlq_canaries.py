"""Bad raw records with a canary planted where a hostile or careless producer would put personal data.

Each case is one raw record (key, value, headers) that must go to the DLQ, and
its canary: a unique name-shaped text (``Canary`` + letters + a number, so it
cannot occur by chance in hex fingerprints or pseudonyms). Planted in member
names, nested map keys (at any depth), enum symbols, union branch names,
header names and values, record keys, and field values, of JSON and Avro events.

``found(canary, data)`` is the one search every test uses, on the raw input
(positive control) and on every output.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass, field
from typing import Any

import fastavro
from hypothesis import strategies as st

from streams.ingest import samples
from streams.ingest.producer import encode_event
from streams.schema import codec
from streams.schema.registry import SchemaRegistry

KINDS = [
    "json_member", "json_email_member", "json_nested_key", "json_enum", "json_union_branch", "json_schema_name",
    "json_tenant", "json_subject", "json_value", "json_undecodable", "key_other", "key_shaped", "header",
    "avro_value_key_mismatch", "avro_trailing", "avro_unknown_fingerprint", "avro_enum", "avro_union_branch",
]


@dataclass
class Case:
    kind: str
    canary: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)

    def raw_bytes(self) -> bytes:
        """The raw input as the search sees it: key, value, header names and values."""
        return b"\n".join([self.key or b"", self.value] + [n.encode() + b"\n" + v for n, v in self.headers])


def found(canary: str, data: bytes) -> bool:
    """Case-insensitive: a canary shown lower- or upper-cased still counts as found."""
    return canary.lower().encode() in data.lower()


def _nest(depth: int, leaf_key: str, leaf: Any) -> Any:
    node: Any = {leaf_key: leaf}
    for i in range(depth):
        node = {f"level{i}": node} if i % 2 else [node]
    return node


def _avro_with_writer(registry: SchemaRegistry, event: dict[str, Any], patch) -> bytes:
    """Avro body written with a patched writer schema but framed with the real fingerprint: a body the
    real schema cannot read (an enum index or union branch it does not have)."""
    entry = registry.by_name(event["schema"])
    writer = json.loads(json.dumps(entry.source))
    patch(writer)
    datum = {k: v for k, v in event.items() if k != "schema"}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(writer), datum)
    return codec.MAGIC + entry.fingerprint + buf.getvalue()


def make_case(kind: str, canary: str, tenant: str, registry: SchemaRegistry, rng: random.Random,
              depth: int = 1, headers: bool = False) -> Case:
    subject = f"u-{rng.randrange(10**6)}"
    key = f"{tenant}/{subject}".encode()
    signup = samples.signup(tenant, subject, rng, full_name=canary)  # the canary as a value too, in most cases
    value: bytes
    if kind == "json_member":
        ev = dict(signup, **{f"Grace_Hopper_{canary}": 1906})
        value = json.dumps(ev).encode()
    elif kind == "json_email_member":
        ev = dict(signup, **{f"{canary.lower()}@example.com": {f"+49 30 {canary}": True}})
        value = json.dumps(ev).encode()
    elif kind == "json_nested_key":
        ev = samples.order(tenant, subject, rng)
        ev["shipping_address"][f"{canary}@example.com"] = _nest(depth, canary, canary)
        value = json.dumps(ev).encode()
    elif kind == "json_enum":
        value = json.dumps(dict(signup, signup_channel=canary)).encode()
    elif kind == "json_union_branch":
        value = json.dumps(dict(signup, phone={canary: "+49 30 1234567"})).encode()
    elif kind == "json_schema_name":
        value = json.dumps(dict(signup, schema=canary)).encode()
    elif kind == "json_tenant":
        value = json.dumps(dict(signup, tenant_id=canary.lower())).encode()
        key = f"{canary.lower()}/{subject}".encode()
    elif kind == "json_subject":
        value = json.dumps(dict(signup, subject_id=canary, birth_date="not-a-date")).encode()
        key = f"{tenant}/{canary}".encode()
    elif kind == "json_value":
        value = json.dumps(dict(signup, email=f"{canary}@example.com", marketing_opt_in=canary)).encode()
    elif kind == "json_undecodable":
        value = b'{"schema": "customer_signup", "full_name": "' + canary.encode() + b'", '
    elif kind == "key_other":
        value = json.dumps(signup).encode()
        key = f"{canary}@example.com".encode()
    elif kind == "key_shaped":
        value = json.dumps(signup).encode()
        key = f"{tenant}/{canary}".encode()  # well shaped, but another subject than the event's
    elif kind == "header":
        value = json.dumps(dict(signup, birth_date="not-a-date")).encode()
        headers = True
    elif kind == "avro_value_key_mismatch":
        value = encode_event(registry, signup, "avro")
        key = f"{tenant}/someone-else".encode()
    elif kind == "avro_trailing":
        value = encode_event(registry, signup, "avro") + canary.encode()
    elif kind == "avro_unknown_fingerprint":
        body = encode_event(registry, signup, "avro")
        value = codec.MAGIC + canary.encode()[:8].ljust(8, b"x") + body[codec.HEADER_LEN:]
    elif kind == "avro_enum":
        ev = dict(signup, signup_channel=canary)

        def patch(w):
            f = next(f for f in w["fields"] if f["name"] == "signup_channel")
            f["type"]["symbols"] = f["type"]["symbols"] + [canary]
        value = _avro_with_writer(registry, ev, patch)
    elif kind == "avro_union_branch":
        ev = dict(signup, phone={"n": 1})

        def patch(w):
            f = next(f for f in w["fields"] if f["name"] == "phone")
            f["type"] = f["type"] + [{"type": "record", "name": canary, "fields": [{"name": "n", "type": "int"}]}]
        value = _avro_with_writer(registry, ev, patch)
    else:
        raise ValueError(kind)
    hdrs = [(f"X-{canary}", f"{canary}@example.com".encode()), ("x-customer", canary.encode())] if headers else []
    return Case(kind, canary, key, value, hdrs)


def canary_text() -> st.SearchStrategy[str]:
    letters = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZabcdefghjkmnpqrstuvwxyz", min_size=6, max_size=10)
    return letters.map(lambda s: "Canary" + s)


@st.composite
def cases(draw, tenant: str, registry: SchemaRegistry, n_extra: int = 6) -> list[Case]:
    """Every kind twice, plus ``n_extra`` of any kind; each with its own canary (numbered: unique)."""
    kinds = KINDS * 2 + draw(st.lists(st.sampled_from(KINDS), min_size=n_extra, max_size=n_extra))
    out = []
    for i, kind in enumerate(kinds):
        canary = f"{draw(canary_text())}{i:03d}"
        rng = random.Random(draw(st.integers(0, 2**32)))
        out.append(make_case(kind, canary, tenant, registry, rng, depth=draw(st.integers(0, 6)),
                             headers=draw(st.booleans())))
    return out
