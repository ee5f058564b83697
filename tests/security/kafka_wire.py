"""A few Kafka protocol requests written by hand, for attacks that the Java and C clients will
not send the way an attacker would (no SASL at all on a SASL listener, admin requests straight
to the controller port).

Only what the tests need: request header v1 (non-flexible), ApiVersions v0, DescribeAcls v1
and CreateAcls v1. See https://kafka.apache.org/protocol for the formats.
"""

from __future__ import annotations

import socket
import struct

API_VERSIONS, CREATE_ACLS, DESCRIBE_ACLS = 18, 30, 29


def _str(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def request(api_key: int, api_version: int, body: bytes, correlation_id: int = 7) -> bytes:
    header = struct.pack(">hhi", api_key, api_version, correlation_id) + _str("attacker")
    msg = header + body
    return struct.pack(">i", len(msg)) + msg


def api_versions() -> bytes:
    return request(API_VERSIONS, 0, b"")


def describe_all_acls() -> bytes:
    # resource type ANY(1), name null, pattern ANY(1), principal null, host null, op ANY(1), perm ANY(1)
    body = struct.pack(">b", 1) + _str(None) + struct.pack(">b", 1) + _str(None) + _str(None) + struct.pack(">bb", 1, 1)
    return request(DESCRIBE_ACLS, 1, body)


def create_read_acl(topic: str, principal: str) -> bytes:
    # one creation: TOPIC(2), literal(3), ALLOW(3) READ(3) from any host
    body = struct.pack(">i", 1) + struct.pack(">b", 2) + _str(topic) + struct.pack(">b", 3) + _str(principal) \
        + _str("*") + struct.pack(">bb", 3, 3)
    return request(CREATE_ACLS, 1, body)


def exchange(host: str, port: int, payload: bytes, timeout: float = 10.0) -> bytes | None:
    """Send one request; the response frame, or None when the broker closed the connection
    without answering (how a SASL listener treats a request before authentication)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(payload)
        head = _recv_exact(s, 4)
        if head is None:
            return None
        (n,) = struct.unpack(">i", head)
        return _recv_exact(s, n)


def _recv_exact(s: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        try:
            chunk = s.recv(n - len(buf))
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        buf += chunk
    return buf


def correlation_id(frame: bytes) -> int:
    return struct.unpack(">i", frame[:4])[0]
