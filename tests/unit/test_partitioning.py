"""Kafka's default partitioner, reimplemented: it must agree with Java's ``Utils.murmur2``."""

from __future__ import annotations

import pytest

from streams.sinks.partitioning import murmur2, partition_for
from streams.records import record_key, split_key


# The vectors of Kafka's own UtilsTest.testMurmur2.
@pytest.mark.parametrize("text,expected", [
    ("21", -973932308), ("foobar", -790332482), ("a-little-bit-long-string", -985981536),
    ("a-little-bit-longer-string", -1486304829),
    ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971), ("abc", 479470107),
])
def test_murmur2_matches_kafka(text, expected):
    assert murmur2(text.encode()) == expected


def test_partition_is_positive_and_in_range():
    for i in range(2000):
        p = partition_for(f"subject-{i}".encode(), 7)
        assert 0 <= p < 7
    assert partition_for(b"abc", 1) == 0
    # toPositive(-973932308) % 12
    assert partition_for(b"21", 12) == (-973932308 & 0x7FFFFFFF) % 12


def test_tenant_record_keys_round_trip():
    key = record_key("cust-1.a:b", "0b8f6f0e-4c57-4d4a-9a0e-3f0c1c6f8a11")
    assert key == b"cust-1.a:b/0b8f6f0e-4c57-4d4a-9a0e-3f0c1c6f8a11"
    assert split_key(key) == ("cust-1.a:b", "0b8f6f0e-4c57-4d4a-9a0e-3f0c1c6f8a11")


@pytest.mark.parametrize("bad", [b"no-slash", b"/only-event", b"only-subject/"])
def test_split_key_refuses_other_keys(bad):
    with pytest.raises(ValueError):
        split_key(bad)
