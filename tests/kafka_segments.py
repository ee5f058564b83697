"""What a broker's segment files hold, decompressed, for tests that search the disk.

Producers compress record batches (the worker's sink uses lz4) and the broker
stores them as they came, so searching a segment's bytes for a value would
find nothing even when the value is there. This reads Kafka's record batch
format (magic v2: a 61-byte header, then the records, compressed as the
header's attributes say) and returns the raw bytes plus every decompressed
batch body. Any file of a partition folder can be read this way, including
``.deleted``, ``.cleaned`` and ``.swap`` files the broker has not removed yet.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import cramjam

_HEADER = 61  # baseOffset..recordsCount
_XERIAL = b"\x82SNAPPY\x00"


def _decompress(codec: int, body: bytes) -> bytes:
    if codec == 0:
        return body
    if codec == 1:
        return gzip.decompress(body)
    if codec == 2:
        if body.startswith(_XERIAL):  # Java's framing: 16-byte header, then (len, block) pairs
            out, pos = bytearray(), 16
            while pos + 4 <= len(body):
                (n,) = struct.unpack_from(">i", body, pos)
                out += bytes(cramjam.snappy.decompress_raw(body[pos + 4:pos + 4 + n]))
                pos += 4 + n
            return bytes(out)
        return bytes(cramjam.snappy.decompress_raw(body))
    if codec == 3:
        return bytes(cramjam.lz4.decompress(body))
    if codec == 4:
        return bytes(cramjam.zstd.decompress(body))
    raise ValueError(f"unknown compression codec {codec}")


def batch_bodies(data: bytes) -> list[bytes]:
    """Every record batch body in ``data``, decompressed. Stops at the first thing that is not a
    v2 batch (a torn tail, or a file that is not a segment)."""
    out: list[bytes] = []
    pos = 0
    while pos + _HEADER <= len(data):
        (length,) = struct.unpack_from(">i", data, pos + 8)
        magic = data[pos + 16]
        end = pos + 12 + length
        if length < _HEADER - 12 or magic != 2 or end > len(data):
            break
        (attributes,) = struct.unpack_from(">h", data, pos + 21)
        out.append(_decompress(attributes & 0x7, data[pos + _HEADER:end]))
        pos = end
    return out


def haystack(path: Path) -> bytes:
    """A segment file's bytes followed by its decompressed batches: search this for a value."""
    data = path.read_bytes()
    return b"\n".join([data, *batch_bodies(data)])


def partition_files(log_dirs: tuple[Path, ...] | list[Path], topic: str) -> list[Path]:
    """Every data file of every partition of ``topic`` (``.log`` and any renamed copy of one)."""
    files: list[Path] = []
    for d in log_dirs:
        for part in d.glob(f"{topic}-*"):
            if part.is_dir() and part.name.rsplit("-", 1)[0] == topic:
                files += [f for f in part.iterdir() if f.is_file() and ".log" in f.name]
    return files
