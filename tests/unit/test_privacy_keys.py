"""The local master-key provider: creation, permissions, corruption, races, wrap/unwrap."""

from __future__ import annotations

import base64
import multiprocessing
import os
import stat
import threading
from pathlib import Path

import pytest

from streams.privacy.exceptions import KeyIntegrityError, KeyProviderError, PrivacyError
from streams.privacy.keys import (
    MASTER_KEY_BYTES,
    SUBJECT_KEY_BYTES,
    KeyProvider,
    LocalKeyFileProvider,
    pipeline_prefix,
    subject_key_name,
    tenant_hash_key,
)


def _raw_key(path: Path) -> bytes:
    header, b64 = path.read_text().splitlines()
    assert header.startswith("streams-master-key v1")
    return base64.b64decode(b64)


def test_creates_key_file_on_first_use_with_safe_modes(tmp_path):
    path = tmp_path / "keys" / "master.key"
    old_umask = os.umask(0)  # permissive umask: the modes must not depend on it
    try:
        p = LocalKeyFileProvider(path)
        assert not path.exists()  # lazily: nothing before first use
        key_id = p.key_id
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.stat().st_uid == os.geteuid()
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and lines[0].startswith("streams-master-key v1") and "base64" in lines[0]
    assert len(base64.b64decode(lines[1], validate=True)) == MASTER_KEY_BYTES
    assert key_id.startswith("local:") and lines[1] not in key_id
    assert sorted(os.listdir(path.parent)) == ["master.key"]  # no temporary left behind
    assert isinstance(p, KeyProvider)


def test_existing_file_is_reused(tmp_path):
    path = tmp_path / "master.key"
    a = LocalKeyFileProvider(path)
    wrapped = a.wrap(b"k" * 32, b"tenant-key/acme/v1")
    content = path.read_bytes()
    b = LocalKeyFileProvider(path)
    assert b.key_id == a.key_id
    assert b.unwrap(wrapped, b"tenant-key/acme/v1") == b"k" * 32
    assert path.read_bytes() == content


def test_create_false_refuses_missing_file(tmp_path):
    path = tmp_path / "master.key"
    with pytest.raises(KeyProviderError, match="does not exist"):
        LocalKeyFileProvider(path, create=False).load()
    assert not path.exists()


def test_existing_parent_dir_mode_is_left_alone(tmp_path):
    parent = tmp_path / "shared"
    parent.mkdir(mode=0o755)
    os.chmod(parent, 0o755)
    LocalKeyFileProvider(parent / "master.key").load()
    assert stat.S_IMODE(parent.stat().st_mode) == 0o755
    assert stat.S_IMODE((parent / "master.key").stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o610])
def test_refuses_file_accessible_by_group_or_others(tmp_path, mode):
    path = tmp_path / "master.key"
    LocalKeyFileProvider(path).load()
    os.chmod(path, mode)
    with pytest.raises(KeyProviderError) as exc:
        LocalKeyFileProvider(path).load()
    assert "group or others" in str(exc.value) and f"chmod 600 {path}" in str(exc.value)


def test_refuses_file_of_another_user(tmp_path, monkeypatch):
    path = tmp_path / "master.key"
    LocalKeyFileProvider(path).load()
    if os.geteuid() == 0:
        os.chown(path, 65534, -1)  # nobody
    else:
        real = os.geteuid()
        monkeypatch.setattr(os, "geteuid", lambda: real + 1)
    with pytest.raises(KeyProviderError) as exc:
        LocalKeyFileProvider(path).load()
    assert "owned by uid" in str(exc.value) and "chown" in str(exc.value)


def test_refuses_a_directory(tmp_path):
    path = tmp_path / "master.key"
    path.mkdir(mode=0o700)
    with pytest.raises(KeyProviderError, match="not a regular file"):
        LocalKeyFileProvider(path).load()


def test_unwritable_location_gives_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(KeyProviderError, match="master key file .*Not a directory"):
        LocalKeyFileProvider(blocker / "keys" / "master.key").load()


def test_failed_creation_says_how_to_fix(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "mkdir", denied)  # root ignores modes: simulate an unwritable folder
    with pytest.raises(KeyProviderError) as exc:
        LocalKeyFileProvider(tmp_path / "keys" / "master.key").load()
    assert "cannot create master key file" in str(exc.value) and "Permission denied" in str(exc.value)
    assert "writable" in str(exc.value)


SECRET_31 = base64.b64encode(b"s" * 31).decode()
SECRET_32 = base64.b64encode(b"t" * 32).decode()


@pytest.mark.parametrize("content", [
    b"",
    b"streams-master-key v1\n",
    f"streams-master-key v1\n{SECRET_31}\n".encode(),        # wrong length
    f"streams-master-key v1\n{SECRET_32[:-2]}!!\n".encode(),  # not base64
    f"not-a-key-file\n{SECRET_32}\n".encode(),                # wrong header
    f"{SECRET_32}\n".encode(),                                # no header
    f"streams-master-key v1\n{SECRET_32}\n{SECRET_32}\n".encode(),  # extra line
    b"streams-master-key v1\n\xff\xfe\n",
])
def test_refuses_corrupt_file_without_echoing_it(tmp_path, content):
    path = tmp_path / "master.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, content)
    os.close(fd)
    os.utime(path, (1_600_000_000, 1_600_000_000))  # old: no grace for a half-written new file
    with pytest.raises(KeyProviderError) as exc:
        LocalKeyFileProvider(path).load()
    msg = str(exc.value)
    assert "corrupt" in msg and "backup" in msg
    for secret in (SECRET_31, SECRET_32, SECRET_32[:20]):
        assert secret not in msg
    assert path.read_bytes() == content  # never overwritten


def test_accepts_crlf_and_missing_final_newline(tmp_path):
    path = tmp_path / "master.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, f"streams-master-key v1: hand-made\r\n{SECRET_32}".encode())
    os.close(fd)
    p = LocalKeyFileProvider(path)
    assert p.unwrap(p.wrap(b"x", b"a"), b"a") == b"x"


def _race_worker(path: str, barrier, queue) -> None:
    barrier.wait()
    p = LocalKeyFileProvider(path)
    queue.put((p.key_id, p.wrap(b"payload", b"aad")))


def test_processes_racing_to_create_end_with_one_key(tmp_path):
    path = tmp_path / "keys" / "master.key"
    ctx = multiprocessing.get_context("fork")
    n = 8
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_race_worker, args=(str(path), barrier, queue)) for _ in range(n)]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=30) for _ in range(n)]
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    assert len({key_id for key_id, _ in results}) == 1
    final = LocalKeyFileProvider(path)
    assert final.key_id == results[0][0]
    for _, wrapped in results:  # every process wrapped with the key that is on disk
        assert final.unwrap(wrapped, b"aad") == b"payload"
    assert os.listdir(path.parent) == ["master.key"]


def test_threads_racing_to_create_end_with_one_key(tmp_path):
    path = tmp_path / "keys" / "master.key"
    barrier = threading.Barrier(16)
    ids: list[str] = []

    def run() -> None:
        barrier.wait()
        ids.append(LocalKeyFileProvider(path).key_id)

    threads = [threading.Thread(target=run) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 16 and len(set(ids)) == 1
    assert os.listdir(path.parent) == ["master.key"]


def test_without_hard_links_racing_threads_still_end_with_one_key(tmp_path, monkeypatch):
    def no_links(*args, **kwargs):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)  # some file systems: the exclusive-create fallback
    path = tmp_path / "keys" / "master.key"
    barrier = threading.Barrier(16)
    ids: list[str] = []

    def run() -> None:
        barrier.wait()
        ids.append(LocalKeyFileProvider(path).key_id)

    threads = [threading.Thread(target=run) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 16 and len(set(ids)) == 1
    assert os.listdir(path.parent) == ["master.key"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.fixture
def provider(tmp_path) -> LocalKeyFileProvider:
    return LocalKeyFileProvider(tmp_path / "master.key")


def test_wrap_unwrap_round_trip(provider):
    secret = os.urandom(SUBJECT_KEY_BYTES)
    wrapped = provider.wrap(secret, b"tenant-key/acme/v1")
    assert wrapped[0] == 1 and len(wrapped) == 1 + 12 + len(secret) + 16
    assert secret not in wrapped
    assert provider.unwrap(wrapped, b"tenant-key/acme/v1") == secret
    # a fresh random nonce each time
    assert provider.wrap(secret, b"tenant-key/acme/v1") != wrapped


def test_tampering_is_detected(provider):
    wrapped = provider.wrap(b"k" * 32, b"aad")
    for i in range(len(wrapped)):  # every byte: format, nonce, ciphertext, tag
        bad = bytearray(wrapped)
        bad[i] ^= 0x01
        with pytest.raises(KeyIntegrityError):
            provider.unwrap(bytes(bad), b"aad")
    for bad in (wrapped[:-1], wrapped[:28], b"", wrapped + b"\x00"):
        with pytest.raises(KeyIntegrityError):
            provider.unwrap(bad, b"aad")


def test_aad_is_bound(provider):
    wrapped = provider.wrap(b"k" * 32, b"tenant-key/acme/v1")
    for aad in (b"tenant-key/acme/v2", b"tenant-key/globex/v1", b"", b"tenant-key/acme/v1 "):
        with pytest.raises(KeyIntegrityError) as exc:
            provider.unwrap(wrapped, aad)
        assert isinstance(exc.value, PrivacyError)


def test_another_master_key_cannot_unwrap(tmp_path):
    a = LocalKeyFileProvider(tmp_path / "a.key")
    b = LocalKeyFileProvider(tmp_path / "b.key")
    assert a.key_id != b.key_id
    with pytest.raises(KeyIntegrityError, match="different master key"):
        b.unwrap(a.wrap(b"k" * 32, b"aad"), b"aad")


def test_repr_and_errors_never_show_the_key(tmp_path):
    path = tmp_path / "master.key"
    p = LocalKeyFileProvider(path)
    assert "not loaded" in repr(p)
    wrapped = p.wrap(b"k" * 32, b"aad")
    raw = _raw_key(path)
    texts = [repr(p), str(p), p.key_id]
    try:
        p.unwrap(wrapped, b"other")
    except KeyIntegrityError as exc:
        texts.append(str(exc))
    assert len(texts) == 4
    for text in texts:
        for needle in (base64.b64encode(raw).decode(), raw.hex(), repr(raw)[2:-1]):
            assert needle not in text
    assert p.key_id in repr(p)


def test_key_layout_is_pipeline_only():
    assert pipeline_prefix("acme") == "k:{acme}:"
    assert tenant_hash_key("acme") == "k:{acme}:tenant"
    assert subject_key_name("acme", "u-1") == "k:{acme}:subj:u-1"
    assert not tenant_hash_key("acme").startswith("t:{")
