"""Worker faults under load, reconciled: SIGKILL at random moments, rebalances, a paused worker.

Each test runs a steady load (tests/reconcile.py), injects its faults, stops the
load, waits until the pipeline has caught up and reconciles every acknowledged
raw event against the tenant topics, the store and the DLQ. On failure the
assertion prints the reconciliation counts. Group changes are read from the broker
(tests/kafka_groups.py), not assumed after a sleep.
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from tests.kafka_groups import wait_group
from tests.reconcile import Load, settle

# Each test: about 30 s of load and faults, then the settle step (bounded by its stall limit).
pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.timeout(420)]


def test_sigkill_at_random_moments_loses_nothing(make_settings, start_worker):
    """Three workers in turn are SIGKILLed while live and under load (seeded random moments; the
    seed is printed, STREAMS_FAULT_SEED replays it); every acknowledged event is reconciled."""
    seed = int(os.environ.get("STREAMS_FAULT_SEED") or random.SystemRandom().randrange(2**32))
    print(f"fault seed: {seed} (STREAMS_FAULT_SEED={seed} replays these kill moments)")
    rng = random.Random(seed)
    s = make_settings(session_timeout=6.0)
    load = Load(s, sorted(s.tenants), rate=200)
    worker = start_worker(s)
    load.start()
    acked_at_kill = []
    for _ in range(3):
        time.sleep(rng.uniform(1.5, 4.0))
        assert worker.proc.poll() is None, f"seed {seed}: the worker died before its kill:\n{worker.log_text()[-2000:]}"
        acked_at_kill.append(len(load.acked))
        worker.kill()  # SIGKILL to the whole process group: no commit, no flush, no goodbye
        assert worker.proc.returncode == -signal.SIGKILL, f"seed {seed}: {worker.proc.returncode}"
        worker = start_worker(s)
    time.sleep(2.0)
    rep = settle(s, load)
    assert rep.ok, f"seed {seed}: {rep}"
    # the load was flowing through every kill
    assert acked_at_kill == sorted(set(acked_at_kill)) and acked_at_kill[0] > 0, (seed, acked_at_kill)
    assert rep.acked_valid > 300 and rep.acked_bad > 10, f"seed {seed}: {rep}"


def _publish_requests(s, tenants: list[str], n: int, stop_after: float) -> None:
    """Random consent requests for side subjects (they have no events: the reconciliation of
    events stays exact), spread over ``stop_after`` seconds."""
    from confluent_kafka import Producer

    from streams.consent.requests import new_request

    rng = random.Random(5)
    p = Producer({**s.kafka(), "enable.idempotence": True, "partitioner": "murmur2_random", "log_level": 0})
    for i in range(n):
        kind = rng.choice(["grant", "revoke", "opt_out", "opt_in", "grant"])
        purpose = rng.choice(["analytics", "marketing", "ml_training"]) if kind in ("grant", "revoke") else None
        req = new_request(kind, rng.choice(tenants), f"consent-{rng.randrange(6)}", "test", purpose)
        p.produce(s.requests_topic, req.to_json(), req.key)
        p.poll(0)
        time.sleep(stop_after / n)
    assert p.flush(60) == 0


def _replayed_states(s) -> dict:
    """Consent state per (tenant, subject) by replaying privacy.requests in topic order."""
    from streams.consent.requests import parse
    from streams.consent.state import SubjectState, apply
    from tests.kafka_read import read_topic

    states: dict = {}
    msgs = read_topic(s.kafka(), s.requests_topic, expect=None, timeout=60, idle=4)
    for m in sorted(msgs, key=lambda m: (m.partition(), m.offset())):
        req = parse(m.value())
        key = (req.tenant, req.subject)
        states[key] = apply(states.get(key, SubjectState()), req)
    return states


def _member_id(worker) -> str:
    """The consumer-group member id the worker last joined with (Faust logs it)."""
    import re

    ids = re.findall(r"Joined group '[^']+' \(generation \d+\) with member_id (\S+)", worker.log_text())
    assert ids, "the worker never logged joining its group:\n" + worker.log_text()[-2000:]
    return ids[-1]


def test_rebalance_one_killed_one_added_loses_nothing_and_state_replays(make_settings, start_worker):
    """Two workers; one is SIGKILLed under load while privacy requests flow, and a third starts 3 s
    later (before the dead one's session expires). The group then settles with two live members and
    without the dead one (its member id, from its log, read from the broker: a rebalance happened);
    every event is reconciled and the consent state equals a replay of privacy.requests.

    Not checked: that the survivor keeps its membership. It does not (found while writing this
    test; see the report of issue 15): its batch waits for the privacy requests of the dead
    worker's partitions, Faust's revocation waits for that batch, and the broker expels it; it
    rejoins once the newcomer has applied them. With the survivor alone the pipeline stalls."""
    import threading

    import redis

    from streams.consent.store import ConsentStore
    from streams.privacy.keys import KeyStore, LocalKeyFileProvider
    from streams.privacy.pseudonyms import Pseudonymizer

    s = make_settings(session_timeout=6.0)
    tenants = sorted(s.tenants)
    first = start_worker(s)
    start_worker(s)
    two = wait_group(s.kafka(), s.app_id, lambda g: g.state == "STABLE" and len(g.members) == 2, 60,
                     "two members")
    load = Load(s, tenants, rate=200)
    load.start()
    requests = threading.Thread(target=_publish_requests, args=(s, tenants, 60, 12.0), daemon=True)
    requests.start()
    time.sleep(4.0)
    dead = _member_id(first)
    assert dead in two.members, (dead, two)
    first.kill()  # its partitions move to the others after the session timeout
    time.sleep(3.0)
    start_worker(s)  # a third joins: another rebalance, under load
    after = wait_group(s.kafka(), s.app_id, lambda g: g.state == "STABLE" and len(g.members) == 2
                       and dead not in g.members, 60, "two live members, the dead one gone")
    print(f"group before the kill: {sorted(two.members)} (dead: {dead}); after: {sorted(after.members)}")
    time.sleep(3.0)  # some load through the new assignment
    rep = settle(s, load)
    requests.join(60)
    assert not requests.is_alive(), "publishing the privacy requests did not end"
    assert rep.ok, str(rep)

    # The consent state the workers built equals a replay of its source, request by request.
    client = redis.Redis.from_url(s.redis_url)
    provider = LocalKeyFileProvider(s.master_key_file, create=False)
    pseudonyms = Pseudonymizer(client, provider)
    consent = ConsentStore(client)
    expected = _replayed_states(s)
    assert len(expected) >= 6
    deadline = time.monotonic() + 30
    while True:
        actual = {k: consent.state(k[0], pseudonyms(*k)) for k in expected}
        if actual == expected or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    differing = [k for k in expected if actual[k] != expected[k]]
    assert not differing, f"consent state differs from the replay for {differing[:5]}"
    # Every subject whose events were delivered has its key (nothing was lost in the rebalance).
    keys = KeyStore(client, provider)
    delivered = {(x.tenant, x.subject) for x in load.acked if x.valid}
    for tenant in tenants:
        subjects = sorted(subj for t, subj in delivered if t == tenant)
        assert set(keys.subject_keys(tenant, subjects, create=False)) == set(subjects)


def test_worker_paused_past_its_session_timeout_is_fenced_out_rejoins_and_loses_nothing(make_settings, start_worker):
    """A worker SIGSTOPped under load is removed from the group (its partitions go to the other
    worker: seen in the membership) while it still holds a stale assignment; resumed, it rejoins as a
    new member and keeps running, and every event is reconciled (duplicates from its resumed batch
    are allowed and counted: the pipeline is at least once)."""
    s = make_settings(session_timeout=6.0)
    paused = start_worker(s)
    start_worker(s)
    two = wait_group(s.kafka(), s.app_id, lambda g: g.state == "STABLE" and len(g.members) == 2, 60,
                     "two members")
    load = Load(s, sorted(s.tenants), rate=200)
    load.start()
    time.sleep(3.0)
    os.killpg(paused.proc.pid, signal.SIGSTOP)  # no heartbeats: the group gives its partitions away
    try:
        one = wait_group(s.kafka(), s.app_id, lambda g: g.state == "STABLE" and len(g.members) == 1, 60,
                         "the paused member fenced out (rebalance to one member)")
        time.sleep(3.0)  # the survivor processes the paused worker's partitions meanwhile
    finally:
        os.killpg(paused.proc.pid, signal.SIGCONT)  # it resumes mid-batch with a stale assignment
    assert one.members < two.members, (one, two)
    back = wait_group(s.kafka(), s.app_id, lambda g: g.state == "STABLE" and len(g.members) == 2, 60,
                      "the resumed worker rejoined")
    assert not back.members <= two.members, "the resumed worker kept its old membership: it was never fenced"
    time.sleep(3.0)
    rep = settle(s, load)
    assert paused.proc.poll() is None, "the resumed worker died:\n" + paused.log_text()[-3000:]
    assert rep.ok, str(rep)
