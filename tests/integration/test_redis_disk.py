"""Positive controls for the searches of Redis that erasure tests rely on (tests/disk_search.py):
a canary planted in Redis is found by the key/value search and, after BGREWRITEAOF, by the byte
search of Redis' files; once deleted and rewritten it is found by neither. And a file in RDB format
(where LZF compression hides values from a byte search) makes the search fail, not pass."""

from __future__ import annotations

import uuid

import pytest
import redis

from tests.disk_search import UnsearchableFile, find, redis_files, redis_values, rewrite_and_wait

pytestmark = pytest.mark.integration


def _redis_dir(stack):
    if stack.redis_dir is None:
        pytest.skip(f"Redis' folder is not on this machine ({stack.kind} stack): its files cannot be searched")
    return stack.redis_dir


def _plant(r: redis.Redis, run: str) -> tuple[list[bytes], list[bytes]]:
    """One key of each type under several prefixes, each holding a canary. The string canary is
    long and repetitive, which RDB would LZF-compress, and one value is all digits, which RDB would
    store as an integer: a byte search of an RDB file finds neither."""
    canaries = {
        "string": f"canary-string-{run} " + "lorem ipsum dolor " * 20,
        "digits": str(1_000_000_000 + int(run[:6], 16)),  # fits RDB's 32-bit integer encoding
        "hash": f"canary-hash-{run}", "set": f"canary-set-{run}", "zset": f"canary-zset-{run}",
        "list": f"canary-list-{run}", "stream": f"canary-stream-{run}", "json": f"Zoë canary-json-{run}",
    }
    keys = [f"t:{{ctl-{run}}}:string".encode(), f"t:{{ctl-{run}}}:digits".encode(), f"k:{{ctl-{run}}}:hash".encode(),
            f"api:ctl-{run}:set".encode(), f"privacy:ctl-{run}:zset".encode(), f"other:ctl-{run}:list".encode(),
            f"ctl-{run}:stream".encode(), f"t:{{ctl-{run}}}:json".encode()]
    r.set(keys[0], canaries["string"])
    r.set(keys[1], canaries["digits"])
    r.hset(keys[2], "field", canaries["hash"])
    r.sadd(keys[3], canaries["set"])
    r.zadd(keys[4], {canaries["zset"]: 1})
    r.rpush(keys[5], canaries["list"])
    r.xadd(keys[6], {"f": canaries["stream"]})
    # A JSON document that escapes its non-ASCII: the decoded search must still see "Zoë".
    r.set(keys[7], '{"name": "Zo\\u00eb canary-json-%s"}' % run)
    return [v.encode() for v in canaries.values()], keys


def test_planted_canaries_are_found_in_every_key_type_and_in_the_aof_until_deleted(stack):
    """Every type and prefix is searched, values decoded; after a finished BGREWRITEAOF the files
    (plain-RESP AOF base) hold every canary; after DEL and another rewrite, no file or key does."""
    redis_dir = _redis_dir(stack)
    r = redis.Redis.from_url(stack.redis_url)
    assert r.config_get("save")["save"] == "" and r.config_get("aof-use-rdb-preamble")["aof-use-rdb-preamble"] == "no"
    run = uuid.uuid4().hex[:10]
    needles, keys = _plant(r, run)
    try:
        values = redis_values(r)
        for key, needle in zip(keys, needles):
            assert needle in values[key.decode()], (key, needle)
        rewrite_and_wait(r)
        files = redis_files(redis_dir)
        base = {p: d for p, d in files.items() if ".base." in p}
        assert base
        found = {n for _, n in find(needles, base)}
        assert found == {n.decode() for n in needles}, "the rewritten AOF base does not hold every canary"
    finally:
        r.delete(*keys)
    rewrite_and_wait(r)
    assert find(needles, redis_values(r)) == []
    assert find(needles, redis_files(redis_dir)) == []


def test_an_rdb_format_file_makes_the_search_fail_not_pass(stack):
    """With an RDB preamble the rewritten AOF base hides a compressed canary from a byte search;
    redis_files refuses such a file loudly."""
    redis_dir = _redis_dir(stack)
    r = redis.Redis.from_url(stack.redis_url)
    run = uuid.uuid4().hex[:10]
    needles, keys = _plant(r, run)
    r.config_set("aof-use-rdb-preamble", "yes")
    try:
        rewrite_and_wait(r)
        base = [f for f in redis_dir.rglob("*.base.*") if f.is_file()]
        assert base and base[0].read_bytes().startswith(b"REDIS")
        # Why the search refuses: the long string is LZF-compressed, the digits integer-encoded.
        assert needles[0] not in base[0].read_bytes()
        assert needles[1] not in base[0].read_bytes()
        with pytest.raises(UnsearchableFile, match="RDB format"):
            redis_files(redis_dir)
    finally:
        r.config_set("aof-use-rdb-preamble", "no")
        r.delete(*keys)
        rewrite_and_wait(r)
    assert not any(f.read_bytes().startswith(b"REDIS") for f in redis_dir.rglob("*") if f.is_file())
