"""The in-flight fence between ingest batches and erasures running on other workers.

Why: the privacy lock orders a worker's own batches and privacy requests, but another worker's
batch can pass its consent gate just before an erasure's marker is set and reach its sinks after.
Two rules close that race ("erasure across workers"):

1. **Refusal.** The store's write script (``streams.sinks.store``) reads each subject's consent
   state in the same atomic call and writes nothing of a subject marked erased; the batch then
   does not produce those events either (they become consent drops, reason ``erased``). So a
   store write that runs after the marker writes nothing of the subject, in the store or topic.
2. **Fence.** A store write that runs before the marker registers its batch here, in the same
   script, as in flight for its tenant: ``k:{t}:inflight``, a ZSET member=batch id, score=the
   lease's end (Redis server time, ms: no worker clock involved). The batch removes itself after
   its tenant-topic write is acknowledged. The erasure, after setting the marker and before it
   reads the store's subject index for its tombstones, waits until every batch registered at that
   moment is gone (``wait_in_flight``). Its tombstones are then produced after every event that
   overtook the marker, on the same partition (both are partitioned by subject), so the tombstone
   is each key's last record and compaction removes the event.

Redis orders the marker's SET and each store script: a script runs entirely before the marker
(registered, so the fence waits for it) or entirely after (refused). Per tenant, not global: the
key shares the tenant's hash tag, so the store script can touch it (Redis Cluster: one slot).

A crashed worker cannot block erasures: a registration lapses after its lease
(``INFLIGHT_LEASE_MS``) and the fence stops waiting for it (counted and logged). A batch that was
only slow (paused, or holding back while the broker is down) finds on removing itself that its
lease had lapsed; it then re-reads its subjects' consent and tombstones its own events of any
subject erased meanwhile (``BatchPipeline``), so the event still ends in a tombstone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import redis

from streams.keyspace import inflight_key

log = logging.getLogger(__name__)

#: How long a batch's registration holds an erasure back at most. A batch takes milliseconds from
#: its store write to its topic acknowledgement; this bounds an erasure's wait for a dead worker.
INFLIGHT_LEASE_MS = 30_000
#: How often the fence looks again (a batch normally leaves within milliseconds).
POLL_SECONDS = 0.01


# Shared by the scripts below: Redis server time in ms.
_NOW_LUA = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

# Removes a batch (ARGV[1]); 1 if it was still registered within its lease, 0 if its lease had
# lapsed (the fence may have stopped waiting for it) or it was gone.
LEAVE_LUA = _NOW_LUA + """
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
if tonumber(s) < now then return 0 end
return 1
"""

# The registered batches (all when ARGV is empty, else those of ARGV still registered) as
# {batches within their lease, batches whose lease lapsed}. Lapsed ones are removed.
INFLIGHT_LUA = _NOW_LUA + """
local members
if #ARGV == 0 then
  members = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
else
  members = {}
  for _, m in ipairs(ARGV) do
    local s = redis.call('ZSCORE', KEYS[1], m)
    if s then members[#members + 1] = m members[#members + 1] = s end
  end
end
local live, lapsed = {}, {}
for i = 1, #members, 2 do
  if tonumber(members[i + 1]) < now then
    lapsed[#lapsed + 1] = members[i]
    redis.call('ZREM', KEYS[1], members[i])
  else
    live[#live + 1] = members[i]
  end
end
return {live, lapsed}
"""


@dataclass(frozen=True)
class FenceResult:
    waited_for: int  # batches in flight when the marker was set (the fence waited for them)
    lapsed: int  # of those and of older registrations: leases that ran out (not waited for)
    waited_ms: int


def _names(xs: list) -> list[str]:
    return [x.decode() if isinstance(x, bytes) else x for x in xs]


def wait_in_flight(client: redis.Redis, tenant: str, max_wait: float = INFLIGHT_LEASE_MS / 1000 + 5) -> FenceResult:
    """Wait until no batch of ``tenant`` registered now is still in flight. Call after the erasure's
    marker is set: later batches are refused by the store for the erased subject, so only these can
    still put its events on the topic. Bounded by the leases (and by ``max_wait`` should a score be
    absurd); a batch whose lease lapses is counted in ``lapsed`` and not waited for any more."""
    started = time.monotonic()
    live, lapsed = client.eval(INFLIGHT_LUA, 1, inflight_key(tenant))
    pending = _names(live)
    waited_for = len(pending)
    n_lapsed = len(lapsed)
    while pending:
        if time.monotonic() - started > max_wait:
            n_lapsed += len(pending)
            break
        time.sleep(POLL_SECONDS)
        live, lapsed = client.eval(INFLIGHT_LUA, 1, inflight_key(tenant), *pending)
        pending = _names(live)
        n_lapsed += len(lapsed)
    return FenceResult(waited_for, n_lapsed, int((time.monotonic() - started) * 1000))
