"""``LocalKeyFileProvider``: the master key in a local file (development, single machine).

Apart from ``KeyStore`` so that a KMS provider can sit beside it (``provider.KeyProvider``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import stat
import threading
import time
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from streams.privacy.exceptions import KeyIntegrityError, KeyProviderError

#: Bytes of the master key of ``LocalKeyFileProvider`` (AES-256-GCM).
MASTER_KEY_BYTES = 32
# AES-256-GCM sizes of this file's wrap format (its own format, not the subject records').
_NONCE_BYTES = 12
_TAG_BYTES = 16

_HEADER_PREFIX = "streams-master-key v1"
_HEADER = (_HEADER_PREFIX + ": AES-256-GCM master key, base64 on the next line. SECRET: keep it mode 0600 "
           "and backed up; losing it makes every token irreversible.")
_WRAP_FORMAT = 1
_MAX_KEY_FILE_BYTES = 4096


class _CorruptKeyFile(Exception):
    pass


def _parse_key_file(data: bytes) -> bytes:
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise _CorruptKeyFile from None
    lines = [line.strip() for line in text.split("\n")]
    while lines and lines[-1] == "":
        lines.pop()
    if len(lines) != 2 or not lines[0].startswith(_HEADER_PREFIX):
        raise _CorruptKeyFile
    try:
        key = base64.b64decode(lines[1], validate=True)
    except (binascii.Error, ValueError):
        raise _CorruptKeyFile from None
    if len(key) != MASTER_KEY_BYTES:
        raise _CorruptKeyFile
    return key


class LocalKeyFileProvider:
    """A master key in a local file: for development and single-machine deployments.

    The file holds a header line saying what it is and the 32-byte key in
    base64. It is created on first use (``create=True``) with mode 0600, its
    folder with mode 0700 when this creates it; creation is atomic (the complete
    file is written to a fresh ``O_CREAT|O_EXCL`` temporary file and published
    with ``link``, which never replaces an existing file), so processes racing
    to create it all end up with the one key that won. A file that group or
    others may access, that another user owns, or that is corrupt is refused
    with ``KeyProviderError`` saying how to fix it.

    Wrapped format: format byte (1) + 12-byte random nonce + AES-256-GCM
    ciphertext and tag, the ``aad`` authenticated.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self._path = Path(path)
        self._create = create
        self._lock = threading.Lock()
        self._aead: AESGCM | None = None
        self._key_id: str | None = None

    def __repr__(self) -> str:
        state = f"key_id={self._key_id!r}" if self._key_id else "not loaded"
        return f"LocalKeyFileProvider(path={str(self._path)!r}, {state})"

    @property
    def path(self) -> Path:
        return self._path

    @property
    def key_id(self) -> str:
        self._load()
        assert self._key_id is not None
        return self._key_id

    def load(self) -> None:
        """Read (or create) the key now: call at start-up to fail fast on a bad key file."""
        self._load()

    def wrap(self, plaintext: bytes, aad: bytes) -> bytes:
        aead = self._load()
        nonce = os.urandom(_NONCE_BYTES)
        return bytes([_WRAP_FORMAT]) + nonce + aead.encrypt(nonce, bytes(plaintext), bytes(aad))

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        aead = self._load()
        wrapped = bytes(wrapped)
        if len(wrapped) < 1 + _NONCE_BYTES + _TAG_BYTES or wrapped[0] != _WRAP_FORMAT:
            raise KeyIntegrityError("wrapped key is malformed or of an unknown format")
        try:
            return aead.decrypt(wrapped[1:1 + _NONCE_BYTES], wrapped[1 + _NONCE_BYTES:], bytes(aad))
        except InvalidTag:
            raise KeyIntegrityError(
                f"cannot unwrap with master key {self._key_id}: a different master key wrapped it, "
                "it belongs to another context, or it was tampered with") from None

    # -- loading

    def _load(self) -> AESGCM:
        aead = self._aead
        if aead is not None:
            return aead
        with self._lock:
            if self._aead is None:
                key = self._read_or_create()
                self._key_id = "local:" + hmac.new(key, b"streams master key id", hashlib.sha256).hexdigest()[:16]
                self._aead = AESGCM(key)
            return self._aead

    def _read_or_create(self) -> bytes:
        try:
            return self._read()
        except FileNotFoundError:
            if not self._create:
                raise KeyProviderError(
                    f"master key file {self._path} does not exist; restore it from backup "
                    "(keys wrapped with a lost master key cannot be recovered)") from None
        self._create_file()
        try:
            return self._read()
        except FileNotFoundError:
            raise KeyProviderError(f"master key file {self._path} vanished right after it was created") from None

    def _read(self) -> bytes:
        path = self._path
        deadline = time.monotonic() + 1.0
        while True:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise
            except OSError as exc:
                raise KeyProviderError(f"cannot open master key file {path}: {exc.strerror}") from None
            try:
                st = os.fstat(fd)
                self._check_safe(st)
                data = os.read(fd, _MAX_KEY_FILE_BYTES + 1)
            except OSError as exc:
                raise KeyProviderError(f"cannot read master key file {path}: {exc.strerror}") from None
            finally:
                os.close(fd)
            try:
                return _parse_key_file(data)
            except _CorruptKeyFile:
                # Only on file systems without hard links is a file ever visible half
                # written (see _create_file): give a brand-new one a moment.
                young = time.time() - st.st_mtime < 2.0
                if young and len(data) < len(_HEADER) + 45 and time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                raise KeyProviderError(
                    f"master key file {path} is corrupt: expected a '{_HEADER_PREFIX}' header line and "
                    f"{MASTER_KEY_BYTES} base64-encoded bytes. Restore it from backup; only if nothing was "
                    "ever wrapped with it, delete it and a new key is created.") from None

    def _check_safe(self, st: os.stat_result) -> None:
        path = self._path
        if not stat.S_ISREG(st.st_mode):
            raise KeyProviderError(f"master key file {path} is not a regular file")
        euid = os.geteuid()
        if st.st_uid != euid:
            raise KeyProviderError(
                f"master key file {path} is owned by uid {st.st_uid}, not by this process' user (uid {euid}); "
                f"fix: chown {euid} {path} (or run as its owner)")
        if st.st_mode & 0o077:
            raise KeyProviderError(
                f"master key file {path} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
                f"fix: chmod 600 {path}")

    def _create_file(self) -> None:
        path = self._path
        parent = path.parent
        try:
            parent.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.mkdir(parent, 0o700)
            except FileExistsError:
                pass
            else:
                os.chmod(parent, 0o700)  # the umask may have narrowed it; never widened
            content = (_HEADER + "\n" + base64.b64encode(os.urandom(MASTER_KEY_BYTES)).decode() + "\n").encode()
            tmp = parent / f".{path.name}.{os.getpid()}.{os.urandom(6).hex()}.tmp"
            self._write_new(tmp, content)
            try:
                try:
                    os.link(tmp, path)  # atomic, and never replaces: the first process to link wins
                except FileExistsError:
                    pass
                except OSError:
                    # No hard links here (some network/overlay file systems): create the
                    # file itself exclusively; readers retry briefly on a half-written one.
                    try:
                        self._write_new(path, content)
                    except FileExistsError:
                        pass
            finally:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
            dir_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise KeyProviderError(
                f"cannot create master key file {path}: {exc.strerror}; fix: make {parent} writable by this "
                "user, or point STREAMS_MASTER_KEY_FILE at a writable place") from None

    @staticmethod
    def _write_new(path: Path, content: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)

