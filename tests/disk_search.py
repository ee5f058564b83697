"""Searches for tests that assert an absence: every Redis key and value, every file of Redis' folder,
every file under the broker's log directories.

A search that finds nothing proves nothing unless it could have found the thing: the tests that use
these run the same search on a planted control (or before the erasure) and assert a hit first.

Redis' files are searched as bytes. That works only when values are stored as they are: the stacks
run Redis with ``aof-use-rdb-preamble no`` (the rewritten AOF base is RESP text) and ``save ""``
(no dump.rdb). A file in RDB format (magic ``REDIS``, as a dump.rdb or an AOF base with an RDB
preamble) holds LZF-compressed and integer-encoded values a byte search misses, so
``redis_files`` refuses it loudly instead of searching it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import redis

from streams.erasure.aof import rewrite_aof
from tests.kafka_segments import haystack

RDB_MAGIC = b"REDIS"
# A partition folder: <topic>-<n>, or one renamed for deletion / a move (<topic>-<n>.<uuid>-delete).
_PARTITION_DIR = re.compile(r"^(?P<topic>.+)-\d+(\.[0-9a-f]{32}-(delete|future|stray))?$")


class UnsearchableFile(AssertionError):
    """A file whose bytes do not hold its values as they are (RDB format)."""


def _json_forms(value: bytes) -> list[bytes]:
    """The value, and, when it is JSON, its strings as UTF-8 (a JSON document may escape them)."""
    out = [value]
    try:
        doc = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return out
    if isinstance(doc, (dict, list, str)):
        out.append(json.dumps(doc, ensure_ascii=False).encode())
    return out


def redis_value(r: redis.Redis, key: bytes) -> bytes:
    """Everything a key holds, of any type, as one text to search (key name included)."""
    kind = r.type(key)
    kind = kind.decode() if isinstance(kind, bytes) else kind
    parts: list[bytes] = [key]
    if kind == "string":
        parts.append(r.get(key) or b"")
    elif kind == "hash":
        for f, v in r.hgetall(key).items():
            parts += [f, *_json_forms(v)]
    elif kind == "set":
        parts += [x for m in r.smembers(key) for x in _json_forms(m)]
    elif kind == "zset":
        for m, score in r.zrange(key, 0, -1, withscores=True):
            parts += [*_json_forms(m), repr(score).encode()]
    elif kind == "list":
        parts += [x for m in r.lrange(key, 0, -1) for x in _json_forms(m)]
    elif kind == "stream":
        for entry_id, fields in r.xrange(key, "-", "+"):
            parts.append(entry_id)
            for f, v in fields.items():
                parts += [f, *_json_forms(v)]
    elif kind == "none":  # deleted while we looked
        return key
    else:
        raise AssertionError(f"Redis key {key!r} has type {kind!r}, which the search cannot read")
    if kind == "string":
        parts += _json_forms(parts[-1])[1:]
    return b"\n".join(parts)


def redis_values(r: redis.Redis) -> dict[str, bytes]:
    """Every key of the database, of every type and prefix (``t:``, ``k:``, ``api:``, ``privacy:``
    and any other), with all it holds. Needs a client that does not decode responses."""
    return {k.decode(errors="replace"): redis_value(r, k) for k in r.scan_iter(count=1000)}


def rewrite_and_wait(r: redis.Redis, timeout: float = 60.0) -> None:
    """BGREWRITEAOF, then wait until a rewrite that began after it has finished with status ok
    (INFO persistence: no rewrite in progress or scheduled, ``aof_last_bgrewrite_status`` ok)."""
    assert rewrite_aof(r, timeout) == {"aof": "rewritten"}, "AOF is off on this Redis"
    info = r.info("persistence")
    assert not info["aof_rewrite_in_progress"] and info["aof_last_bgrewrite_status"] == "ok", info


def redis_files(redis_dir: Path) -> dict[str, bytes]:
    """Every file under Redis' folder (the AOF base and increment files and the manifest, any
    dump.rdb, the log), as bytes. Asserts that an AOF base and an increment file are among them,
    and fails loudly on any file in RDB format (its values may be compressed)."""
    out: dict[str, bytes] = {}
    for f in sorted(redis_dir.rglob("*")):
        if not f.is_file():
            continue
        data = f.read_bytes()
        if data.startswith(RDB_MAGIC):
            raise UnsearchableFile(
                f"{f} is in RDB format (LZF-compressed, integer-encoded values): a byte search can miss "
                "an erased value there. Run Redis with `save \"\"` and `aof-use-rdb-preamble no`.")
        out[str(f)] = data
    names = [Path(p).name for p in out]
    assert any(".base." in n for n in names), f"no AOF base file under {redis_dir}: {names}"
    assert any(".incr." in n for n in names), f"no AOF increment file under {redis_dir}: {names}"
    return out


# Kafka's offset and time indexes: fixed-width numbers (relative offsets, file positions,
# timestamps) the broker writes itself, never a byte a producer sent. Each active segment's
# index is preallocated as a 10 MiB sparse file: reading them made a search of a busy test
# broker (a thousand partitions) allocate over 20 GB and take minutes, so they are skipped.
INDEX_SUFFIXES = (".index", ".timeindex")


def _is_index(f: Path) -> bool:
    name = f.name
    for tail in (".deleted", ".cleaned", ".swap"):
        name = name.removesuffix(tail)
    return name.endswith(INDEX_SUFFIXES)


def broker_files(log_dirs) -> dict[str, bytes]:
    """Every file under the broker's log directories (every topic's partition folders, internal
    topics, files renamed for deletion or cleaning) except the offset and time indexes
    (``INDEX_SUFFIXES``: numbers only), segment files with their batches decompressed."""
    out: dict[str, bytes] = {}
    for d in log_dirs:
        for f in sorted(Path(d).rglob("*")):
            try:
                if not f.is_file() or _is_index(f):
                    continue
                out[str(f)] = haystack(f) if ".log" in f.name else f.read_bytes()
            except FileNotFoundError:  # removed by the broker while we looked
                continue
    assert out, f"no file under the broker's log directories {log_dirs}"
    return out


def topic_of(path: str, log_dirs) -> str:
    """The topic a file under the log directories belongs to ('' for files of the folder itself)."""
    for d in log_dirs:
        try:
            rel = Path(path).relative_to(d)
        except ValueError:
            continue
        if len(rel.parts) < 2:
            return ""
        m = _PARTITION_DIR.match(rel.parts[0])
        return m.group("topic") if m else rel.parts[0]
    return ""


def forms(needle: bytes) -> set[bytes]:
    """A needle as bytes may hold it: UTF-8, and as a JSON string escapes it (``\\u00eb``, as the
    store's documents and the files that hold them do for non-ASCII)."""
    out = {needle}
    try:
        out.add(json.dumps(needle.decode())[1:-1].encode())
    except UnicodeDecodeError:
        pass
    return out


def find(needles: list[bytes], haystacks: dict[str, bytes]) -> list[tuple[str, str]]:
    """(where, needle) for every needle found, in any of its forms, in every haystack."""
    return [(where, n.decode(errors="replace")) for where, data in haystacks.items() for n in needles
            if any(f in data for f in forms(n))]
