"""The key hierarchy on a real Redis: get-or-create, erasure, rotation, races, what is stored."""

from __future__ import annotations

import base64
import random
import threading
import uuid
from typing import Any, Callable, Iterator

import pytest
import redis

from streams.privacy.exceptions import KeyIntegrityError, KeyNotFound, KeyProviderError, TenantKeyDamaged
from streams.privacy.keys import (
    SUBJECT_KEY_BYTES,
    KeyStore,
    check_key_name,
    LocalKeyFileProvider,
    RotationReport,
    subject_key_name,
    tenant_hash_key,
    tenant_key_aad,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def client(stack) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(stack.redis_url, socket_timeout=10)
    yield c
    c.close()


@pytest.fixture
def provider(tmp_path) -> LocalKeyFileProvider:
    return LocalKeyFileProvider(tmp_path / "keys" / "master.key")


@pytest.fixture
def tenants(client, provider) -> Iterator[Callable[[], str]]:
    """Unique tenant names; their key material is deleted afterwards."""
    made: list[str] = []

    def new() -> str:
        made.append(f"kt{uuid.uuid4().hex[:8]}")
        return made[-1]

    yield new
    for t in made:
        KeyStore(client, provider).destroy_tenant(t)


def _keys_of(client: redis.Redis, pattern: str) -> list[bytes]:
    return sorted(client.scan_iter(match=pattern, count=1000))


def _values_of(client: redis.Redis, tenant: str) -> list[bytes]:
    """Every value stored under the tenant's key-material prefix (strings and hash fields)."""
    out: list[bytes] = []
    for name in _keys_of(client, f"k:{{{tenant}}}:*"):
        kind = client.type(name)
        if kind == b"string":
            out.append(client.get(name))
        elif kind == b"hash":
            for field, value in client.hgetall(name).items():
                out += [field, value]
        else:
            raise AssertionError(f"unexpected type {kind!r} at {name!r}")
    return out


class CountingClient:
    """Delegates to a real client and records the commands KeyStore sends directly."""

    def __init__(self, real: redis.Redis) -> None:
        self._real = real
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._real, name)
        if name != "register_script" and callable(attr):
            def call(*args: Any, **kwargs: Any) -> Any:
                self.calls.append(name)
                return attr(*args, **kwargs)
            return call
        return attr


def test_get_or_create_is_stable_across_calls_and_instances(stack, client, tmp_path, tenants):
    t = tenants()
    path = tmp_path / "keys" / "master.key"
    a = KeyStore(client, LocalKeyFileProvider(path))
    first = a.subject_keys(t, ["alice", "bob"])
    assert set(first) == {"alice", "bob"}
    assert all(len(k) == SUBJECT_KEY_BYTES for k in first.values())
    assert first["alice"] != first["bob"]
    assert a.subject_keys(t, ["bob", "alice", "alice"]) == first
    assert a.tenant_key_version(t) == 1

    other_client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    b = KeyStore(other_client, LocalKeyFileProvider(path))  # another process' view, str replies
    assert b.subject_keys(t, ["alice", "bob", "carol"]) == {**first, "carol": a.subject_key(t, "carol")}
    assert b.subject_key(t, "alice") == first["alice"]
    assert list(b.subject_keys(t, ["carol", "alice"])) == ["carol", "alice"]
    other_client.close()


def test_batch_of_500_in_one_round_trip_once_they_exist(client, provider, tenants):
    t = tenants()
    subjects = [f"user-{i}" for i in range(500)]
    created = KeyStore(client, provider).subject_keys(t, subjects)
    assert len(created) == 500 and len(set(created.values())) == 500

    counting = CountingClient(client)
    store = KeyStore(counting, provider)
    assert store.subject_keys(t, subjects) == created  # cold cache: MGET + the tenant key once
    # ... and, once per tenant and process, whether its master-key check record exists
    assert counting.calls == ["mget", "hget", "exists"]
    counting.calls.clear()
    assert store.subject_keys(t, list(reversed(subjects)), create=False) == created
    assert counting.calls == ["mget"]


def run_threads(*targets: Callable[[], None], timeout: float = 60.0) -> None:
    """Runs each target in a daemon thread and joins them all within ``timeout`` s; fails if one is
    still running then (a hang cannot keep pytest from exiting) or raised (re-raised here)."""
    errors: list[BaseException] = []

    def guarded(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
                errors.append(exc)
        return run

    threads = [threading.Thread(target=guarded(fn), daemon=True) for fn in targets]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout)
    assert not any(th.is_alive() for th in threads), f"a thread was still running after {timeout} s"
    if errors:
        raise errors[0]


def test_concurrent_creators_agree_on_one_key(client, provider, tenants):
    t = tenants()
    subjects = [f"s{i}" for i in range(200)]
    barrier = threading.Barrier(6)
    results: list[dict[str, bytes]] = []

    def run() -> None:
        store = KeyStore(redis.Redis(connection_pool=client.connection_pool), provider)
        barrier.wait(timeout=30)
        results.append(store.subject_keys(t, subjects))

    run_threads(*[run] * 6)
    assert len(results) == 6
    assert all(r == results[0] for r in results)
    assert KeyStore(client, provider).subject_keys(t, subjects, create=False) == results[0]
    assert len(client.hgetall(tenant_hash_key(t))) == 2  # one tenant key version, plus "current"


def test_destroy_makes_the_subject_key_unrecoverable(client, provider, tenants):
    t = tenants()
    store = KeyStore(client, provider)
    keys = store.subject_keys(t, ["alice", "bob"])
    other_worker = KeyStore(client, provider)
    assert other_worker.subject_key(t, "alice") == keys["alice"]  # warm its caches

    assert store.destroy_subject_key(t, "alice") is True
    assert store.destroy_subject_key(t, "alice") is False
    with pytest.raises(KeyNotFound) as exc:
        other_worker.subject_key(t, "alice")  # immediately, on every worker
    assert "alice" not in str(exc.value)
    assert other_worker.subject_keys(t, ["alice", "bob"], create=False) == {"bob": keys["bob"]}
    assert client.exists(subject_key_name(t, "alice")) == 0
    # creating again yields a new key: the destroyed one is gone for good
    assert store.subject_keys(t, ["alice"])["alice"] != keys["alice"]


def test_missing_tenant_or_subject_without_create(client, provider, tenants):
    t = tenants()
    store = KeyStore(client, provider)
    assert store.subject_keys(t, ["nobody"], create=False) == {}
    assert store.tenant_key_version(t) is None
    assert _keys_of(client, f"k:{{{t}}}:*") == []  # reading created nothing
    with pytest.raises(KeyNotFound):
        store.subject_key(t, "nobody")
    with pytest.raises(KeyNotFound):
        store.rotate_tenant_key(t)
    assert store.subject_keys(t, []) == {}


def test_rotation_keeps_subject_keys_and_leaves_no_old_material(client, provider, tenants):
    t = tenants()
    store = KeyStore(client, provider)
    subjects = [f"u{i}" for i in range(1200)]  # more than one SCAN page
    before = store.subject_keys(t, subjects)
    wrapped_before = client.mget([subject_key_name(t, s) for s in subjects])
    old_tenant_field = client.hget(tenant_hash_key(t), "v1")

    report = store.rotate_tenant_key(t)
    assert report == RotationReport(t, 1, 2, 1200, 1)
    assert store.tenant_key_version(t) == 2
    assert set(client.hgetall(tenant_hash_key(t))) == {b"current", b"v2"}
    wrapped_after = client.mget([subject_key_name(t, s) for s in subjects])
    assert all(v.startswith(b"v2:") for v in wrapped_after)
    assert not set(wrapped_before) & set(wrapped_after)
    assert old_tenant_field not in _values_of(client, t)

    # same subject keys (old tokens stay detokenizable), from this and a fresh worker
    assert store.subject_keys(t, subjects, create=False) == before
    fresh = KeyStore(client, provider)
    assert fresh.subject_keys(t, subjects, create=False) == before
    assert fresh.subject_key(t, "u7") == before["u7"]

    assert store.rotate_tenant_key(t) == RotationReport(t, 2, 3, 1200, 1)
    assert fresh.subject_keys(t, subjects, create=False) == before  # its cached v2 is now gone
    assert set(client.hgetall(tenant_hash_key(t))) == {b"current", b"v3"}


def test_worker_with_stale_cache_reads_after_rotation_elsewhere(client, provider, tenants):
    t = tenants()
    worker = KeyStore(client, provider)
    keys = worker.subject_keys(t, ["a", "b"])
    KeyStore(client, provider).rotate_tenant_key(t)
    assert worker.subject_keys(t, ["a", "b", "c"]) == {**keys, "c": worker.subject_key(t, "c")}
    assert client.get(subject_key_name(t, "c")).startswith(b"v2:")  # new keys under the new version


class DestroyAfterRead:
    """A client through which the first MGET of ``victims`` is followed at once by their erasure."""

    def __init__(self, real: redis.Redis, victims: list[str]) -> None:
        self._real = real
        self._victims = victims
        self.fired = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def mget(self, keys: Any, *args: Any) -> Any:
        values = self._real.mget(keys, *args)
        wanted = {k.encode() if isinstance(k, str) else k for k in keys}
        if not self.fired and any(v.encode() in wanted for v in self._victims):
            self.fired = True
            self._real.delete(*self._victims)  # the erasure lands between read and write-back
        return values


def test_destroy_between_read_and_rewrap_is_not_undone(client, provider, tenants):
    t = tenants()
    subjects = [f"u{i}" for i in range(50)]
    keys = KeyStore(client, provider).subject_keys(t, subjects)
    victims = [subject_key_name(t, s) for s in subjects[::5]]
    racing = DestroyAfterRead(client, victims)
    report = KeyStore(racing, provider).rotate_tenant_key(t)
    assert racing.fired
    assert report.rewrapped == 40
    assert client.exists(*victims) == 0
    left = KeyStore(client, provider).subject_keys(t, subjects, create=False)
    assert left == {s: k for s, k in keys.items() if s not in subjects[::5]}


class PausingScan:
    """A client whose first SCAN (a rotation's first page, read before it re-wraps anything) waits
    until ``go`` is set: the other side of a race then surely runs while the rotation is under way."""

    def __init__(self, real: redis.Redis, go: threading.Event) -> None:
        self._real = real
        self._go = go
        self.started = threading.Event()
        self.scans = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def scan(self, *args: Any, **kwargs: Any) -> Any:
        page = self._real.scan(*args, **kwargs)
        self.scans += 1
        if self.scans == 1:
            self.started.set()
            assert self._go.wait(30), "the other side of the race never got going"
        return page


def test_destroys_racing_with_rotation_stay_destroyed(client, provider, tenants):
    """600 destroys run while a rotation re-wraps 3000 keys: the rotation waits after its first SCAN
    page until 100 are done, the other 500 race freely; destroys that ran between that page and
    the rotation's end are counted (at least 100). None is undone by the re-wrap."""
    t = tenants()
    subjects = [f"u{i}" for i in range(3000)]
    keys = KeyStore(client, provider).subject_keys(t, subjects)
    doomed = random.Random(7).sample(subjects, 600)
    eraser = KeyStore(redis.Redis(connection_pool=client.connection_pool), provider)
    reports: list[RotationReport] = []
    go = threading.Event()
    pausing = PausingScan(redis.Redis(connection_pool=client.connection_pool), go)
    rotating = threading.Event()
    destroyed: list[bool] = []
    during_rotation = 0

    def rotate() -> None:
        try:
            reports.append(KeyStore(pausing, provider).rotate_tenant_key(t))
        finally:
            rotating.clear()

    def erase() -> None:
        nonlocal during_rotation
        assert pausing.started.wait(30), "the rotation never reached its first SCAN"
        for i, s in enumerate(doomed):
            destroyed.append(eraser.destroy_subject_key(t, s))
            during_rotation += rotating.is_set()
            if i == 99:
                go.set()  # the rotation goes on from here, racing with the other 500
        go.set()

    rotating.set()
    run_threads(rotate, erase)
    assert during_rotation >= 100, f"only {during_rotation} destroys overlapped the rotation"
    print(f"{during_rotation} of {len(doomed)} destroys ran during the rotation ({pausing.scans} SCAN pages)")
    assert len(destroyed) == len(doomed) and all(destroyed)
    assert reports and reports[0].new_version == 2
    assert client.exists(*[subject_key_name(t, s) for s in doomed]) == 0
    left = KeyStore(client, provider).subject_keys(t, subjects, create=False)
    assert left == {s: k for s, k in keys.items() if s not in set(doomed)}
    assert all(v.startswith(b"v2:") for v in client.mget([subject_key_name(t, s) for s in left]))


def test_creation_racing_with_rotation_never_loses_a_key(client, provider, tenants):
    """A creator adds keys in batches of 20 while a rotation re-wraps 2000: the rotation waits after
    its first SCAN page until 5 batches are done, later ones race freely; batches between that page
    and the rotation's end are counted (at least 5). Every key created is readable afterwards,
    under the new version."""
    t = tenants()
    store = KeyStore(client, provider)
    store.subject_keys(t, [f"old{i}" for i in range(2000)])
    created: dict[str, bytes] = {}
    stop = threading.Event()
    go = threading.Event()
    pausing = PausingScan(redis.Redis(connection_pool=client.connection_pool), go)
    rotating = threading.Event()
    reports: list[RotationReport] = []
    batches_during_rotation = 0

    def create() -> None:
        nonlocal batches_during_rotation
        creator = KeyStore(redis.Redis(connection_pool=client.connection_pool), provider)
        i = 0
        try:
            while (not stop.is_set() or i < 200) and i < 100_000:  # bounded even if the rotation hangs
                batch = [f"new{i + j}" for j in range(20)]
                created.update(creator.subject_keys(t, batch))
                i += 20
                if pausing.started.is_set() and rotating.is_set():
                    batches_during_rotation += 1
                    if batches_during_rotation == 5:
                        go.set()  # the rotation goes on from here, racing with the next batches
        finally:
            go.set()

    def rotate() -> None:
        try:
            reports.append(KeyStore(pausing, provider).rotate_tenant_key(t))
        finally:
            rotating.clear()
            stop.set()

    rotating.set()
    run_threads(create, rotate)
    assert batches_during_rotation >= 5, f"only {batches_during_rotation} batches overlapped the rotation"
    print(f"{batches_during_rotation} batches of 20 created during the rotation ({pausing.scans} SCAN pages)")
    [report] = reports
    assert report.new_version == 2 and report.deleted_versions == 1
    assert set(client.hgetall(tenant_hash_key(t))) == {b"current", b"v2"}
    # every key created during the rotation is readable: none is left under the deleted v1
    assert KeyStore(client, provider).subject_keys(t, list(created), create=False) == created
    assert all(v.startswith(b"v2:") for v in client.mget([subject_key_name(t, s) for s in created]))


class RotateBeforeFirstWrite:
    """A client through which a rotation completes after the creator read the current version, before its write."""

    def __init__(self, real: redis.Redis, rotate: Callable[[], RotationReport]) -> None:
        self._real = real
        self._rotate = rotate
        self.reports: list[RotationReport] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def register_script(self, text: str) -> Callable[..., Any]:
        script = self._real.register_script(text)

        def call(keys: list[Any], args: list[Any]) -> Any:
            if len(keys) > 1 and not self.reports:  # the creator's write of new subject keys
                self.reports.append(self._rotate())
            return script(keys=keys, args=args)

        return call


def test_keys_created_while_a_rotation_retires_their_version_move_to_the_new_one(client, provider, tenants):
    t = tenants()
    KeyStore(client, provider).subject_keys(t, ["old"])
    racing = RotateBeforeFirstWrite(client, lambda: KeyStore(client, provider).rotate_tenant_key(t))
    created = KeyStore(racing, provider).subject_keys(t, ["n1", "n2"])
    assert racing.reports == [RotationReport(t, 1, 2, 1, 1)]  # v1 deleted while the creator held it
    assert set(client.hgetall(tenant_hash_key(t))) == {b"current", b"v2"}
    assert all(v.startswith(b"v2:") for v in client.mget(subject_key_name(t, "n1"), subject_key_name(t, "n2")))
    assert KeyStore(client, provider).subject_keys(t, ["n1", "n2"], create=False) == created


class RotateAfterFirstRead:
    """A client through which a complete rotation lands right after the first MGET."""

    def __init__(self, real: redis.Redis, rotate: Callable[[], RotationReport]) -> None:
        self._real = real
        self._rotate = rotate
        self.reports: list[RotationReport] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def mget(self, keys: Any, *args: Any) -> Any:
        values = self._real.mget(keys, *args)
        if not self.reports:
            self.reports.append(self._rotate())
        return values


def test_reader_whose_version_a_rotation_just_deleted_reads_again(client, provider, tenants):
    t = tenants()
    keys = KeyStore(client, provider).subject_keys(t, ["a", "b"])
    racing = RotateAfterFirstRead(client, lambda: KeyStore(client, provider).rotate_tenant_key(t))
    reader = KeyStore(racing, provider)  # cold cache: it must fetch the v1 its values name, now deleted
    assert reader.subject_keys(t, ["a", "b"], create=False) == keys
    assert racing.reports == [RotationReport(t, 1, 2, 2, 1)]


def test_nothing_in_redis_holds_a_raw_key(client, provider, tenants):
    t = tenants()
    store = KeyStore(client, provider)
    keys = store.subject_keys(t, [f"u{i}" for i in range(100)])
    store.rotate_tenant_key(t)
    stored = b"\n".join(_values_of(client, t))
    assert stored  # there is something to look at
    for raw in keys.values():
        for form in (raw, base64.b64encode(raw), raw.hex().encode(), raw[:32], base64.b64encode(raw[:32])):
            assert form not in stored
    # nor the tenant key (unwrapped here with the master key, as only the pipeline can)
    wrapped_tenant_key = base64.b64decode(client.hget(tenant_hash_key(t), "v2"))
    tenant_key = provider.unwrap(wrapped_tenant_key, tenant_key_aad(t, 2))
    assert len(tenant_key) == 32
    for form in (tenant_key, base64.b64encode(tenant_key), tenant_key.hex().encode()):
        assert form not in stored


def test_pipeline_keys_never_under_the_tenant_prefix(client, provider, tenants):
    t = tenants()
    store = KeyStore(client, provider)
    store.subject_keys(t, ["a", "b"])
    store.rotate_tenant_key(t)
    store.destroy_subject_key(t, "a")
    assert _keys_of(client, f"t:{{{t}}}:*") == []
    names = _keys_of(client, f"*{t}*")
    assert names == sorted([tenant_hash_key(t).encode(), subject_key_name(t, "b").encode(),
                            check_key_name(t).encode()])
    assert all(n.startswith(f"k:{{{t}}}:".encode()) for n in names)


def test_tampered_or_swapped_records_are_detected(client, provider, tenants):
    t = tenants()
    store = KeyStore(client, provider)
    store.subject_keys(t, ["a", "b", "c"])
    a, b = client.mget(subject_key_name(t, "a"), subject_key_name(t, "b"))
    client.set(subject_key_name(t, "a"), b)  # b's wrapped key moved to a: the aad binds it to b
    with pytest.raises(KeyIntegrityError):
        KeyStore(client, provider).subject_key(t, "a")
    client.set(subject_key_name(t, "a"), b"v1:not-base64!")
    with pytest.raises(KeyIntegrityError) as exc:
        store.subject_key(t, "a")
    assert "not-base64" not in str(exc.value)
    client.set(subject_key_name(t, "a"), a)
    assert len(store.subject_key(t, "a")) == SUBJECT_KEY_BYTES


def test_another_master_key_cannot_read(client, provider, tenants, tmp_path):
    t = tenants()
    KeyStore(client, provider).subject_keys(t, ["a"])
    intruder = KeyStore(client, LocalKeyFileProvider(tmp_path / "other.key"))
    # A wrong master key is every tenant's fault (held back), not this tenant's (set aside).
    with pytest.raises(KeyProviderError) as exc:
        intruder.subject_key(t, "a")
    assert "master key" in str(exc.value)


def test_destroy_tenant_and_recreate_with_warm_cache_elsewhere(client, provider, tenants):
    t = tenants()
    worker = KeyStore(client, provider)
    old = worker.subject_keys(t, [f"u{i}" for i in range(10)])
    admin = KeyStore(client, provider)
    assert admin.destroy_tenant(t) == 12  # ten subject keys, the tenant hash and its check record
    assert _keys_of(client, f"k:{{{t}}}:*") == []
    assert admin.tenant_key_version(t) is None
    assert worker.subject_keys(t, list(old), create=False) == {}

    new = admin.subject_keys(t, ["u0"])  # onboarded again: a new tenant key v1
    assert new["u0"] != old["u0"]
    made_by_worker = worker.subject_keys(t, ["u1"])  # wrapped with the live v1, not its cached old one
    assert KeyStore(client, provider).subject_key(t, "u1") == made_by_worker["u1"]
    assert worker.subject_key(t, "u0") == new["u0"]

    other = KeyStore(client, provider)
    assert other.subject_key(t, "u0") == new["u0"]  # caches the second v1
    admin.destroy_tenant(t)
    again = admin.subject_keys(t, ["u0"])
    assert other.subject_key(t, "u0") == again["u0"]  # a stale cached v1 is noticed on read and replaced


def test_repr_reveals_no_key(client, provider, tenants):
    t = tenants()
    store = KeyStore(client, provider)
    store.subject_keys(t, ["a"])
    text = repr(store)
    assert "KeyStore(" in text and provider.key_id in text
    raw_master = base64.b64decode(provider.path.read_text().splitlines()[1])
    assert base64.b64encode(raw_master).decode() not in text and raw_master.hex() not in text


def test_invalid_tenant_names_are_refused(client, provider):
    store = KeyStore(client, provider)
    for bad in ("ACME", "a*", "a}b", "", "t:{x"):
        with pytest.raises(ValueError):
            store.subject_keys(bad, ["x"])
    with pytest.raises(ValueError):
        store.subject_keys("acme", [""])


# ------------------------------------------------------------------ whose fault: a damaged tenant or the master key

def _rot(client: redis.Redis, tenant: str, version: int = 1) -> None:
    """Flip one bit of the wrapped tenant key, as bit rot or an attacker with a plain client would:
    still valid base64, the AES-GCM tag no longer verifies."""
    field = f"v{version}"
    wrapped = bytearray(base64.b64decode(client.hget(tenant_hash_key(tenant), field)))
    wrapped[20] ^= 0x04
    client.hset(tenant_hash_key(tenant), field, base64.b64encode(bytes(wrapped)))


def test_a_damaged_tenant_key_is_that_tenants_fault_alone(client, provider, tenants):
    broken, healthy = tenants(), tenants()
    made = KeyStore(client, provider)
    before = {t: made.subject_keys(t, ["a", "b"]) for t in (broken, healthy)}
    _rot(client, broken)
    fresh = KeyStore(client, provider)  # a worker started after the damage (cold cache)
    for subjects in (["a"], ["a", "new-subject"], ["new-subject"]):
        with pytest.raises(TenantKeyDamaged) as exc:
            fresh.subject_keys(broken, subjects)
        assert exc.value.tenant == broken and exc.value.subjects == frozenset()  # every subject of it
        assert "new-subject" not in str(exc.value)
    assert fresh.subject_keys(healthy, ["a", "b"]) == before[healthy]  # the other tenant goes on
    # Malformed (not base64 at all) is the tenant's fault too.
    client.hset(tenant_hash_key(broken), "v1", "not base64!")
    with pytest.raises(TenantKeyDamaged):
        KeyStore(client, provider).subject_keys(broken, ["a"])


def test_a_wrong_master_key_is_everyones_fault(client, provider, tenants, tmp_path):
    broken, healthy = tenants(), tenants()
    made = KeyStore(client, provider)
    for t in (broken, healthy):
        made.subject_keys(t, ["a"])
    _rot(client, broken)
    intruder = KeyStore(client, LocalKeyFileProvider(tmp_path / "wrong.key"))
    for t in (broken, healthy):  # with a damaged tenant key in Redis too: the master key is the fault
        with pytest.raises(KeyProviderError, match="master key"):
            intruder.subject_keys(t, ["a"])


def test_without_a_check_record_nothing_is_pinned_on_the_tenant(client, provider, tenants):
    t = tenants()
    KeyStore(client, provider).subject_keys(t, ["a"])
    check = client.get(check_key_name(t))
    assert check is not None  # made with the tenant's first key
    _rot(client, t)
    client.delete(check_key_name(t))
    with pytest.raises(KeyProviderError, match="no check record"):
        KeyStore(client, provider).subject_keys(t, ["a"])
    client.set(check_key_name(t), check)  # positive control: with it, the damage is the tenant's
    with pytest.raises(TenantKeyDamaged):
        KeyStore(client, provider).subject_keys(t, ["a"])
    client.set(check_key_name(t), b"garbage")  # a check record that does not unwrap: held back
    with pytest.raises(KeyProviderError):
        KeyStore(client, provider).subject_keys(t, ["a"])


def test_a_tenant_older_than_the_check_gets_one_when_its_key_unwraps(client, provider, tenants):
    t = tenants()
    KeyStore(client, provider).subject_keys(t, ["a"])
    client.delete(check_key_name(t))  # as made by a version without the check
    KeyStore(client, provider).subject_keys(t, ["a"])  # unwraps the stored tenant key: proven
    assert client.exists(check_key_name(t))
    _rot(client, t)
    with pytest.raises(TenantKeyDamaged):
        KeyStore(client, provider).subject_keys(t, ["a"])


def test_damaged_subject_records_are_those_subjects_fault_and_are_never_replaced(client, provider, tenants):
    t = tenants()
    store = KeyStore(client, provider)
    before = store.subject_keys(t, ["a", "b", "c"])
    a, b = client.mget(subject_key_name(t, "a"), subject_key_name(t, "b"))
    client.set(subject_key_name(t, "b"), a)  # a's record moved onto b: the aad binds it to a
    client.set(subject_key_name(t, "c"), b"v1:not-base64!")
    for s in (store, KeyStore(client, provider)):
        with pytest.raises(TenantKeyDamaged) as exc:
            s.subject_keys(t, ["a", "b", "c", "d"])
        assert exc.value.subjects == {"b", "c"}
        assert "not-base64" not in str(exc.value) and "'b'" not in str(exc.value)
        got = s.subject_keys(t, ["a", "d"])  # the others, asked again without them
        assert got["a"] == before["a"] and len(got["d"]) == SUBJECT_KEY_BYTES
    assert client.get(subject_key_name(t, "b")) == a  # left as found, for an operator to look at
    assert client.get(subject_key_name(t, "c")) == b"v1:not-base64!"
