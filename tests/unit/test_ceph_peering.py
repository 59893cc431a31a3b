"""Runbook 1-1 during a failover: PG peering (after a fenced node's client is blocklisted) is
waited out for a bounded time; a real problem is reported at once. One piece of code
(components.ceph_health.classify and settle) for the health gate and `python -m verify`."""

from __future__ import annotations

from typing import Any

import pytest

from components.ceph_health import HEALTHY, PEERING, PEERING_BOUND_S, PEERING_POLL_S, PROBLEM, classify, settle
from tests.unit.fake_ceph import PEERING as PEERING_STATUS
from tests.unit.fake_ceph import FakeClock, ceph_status

OK = ceph_status()
AVAILABILITY = "Reduced data availability: 1 pg inactive, 1 pg peering"


def answers(*statuses: dict[str, Any]) -> tuple[list[dict[str, Any]], Any]:
    """`ceph status` answers in turn (the last one stays), and the reads made."""
    reads: list[dict[str, Any]] = []
    queue = list(statuses)

    def read() -> dict[str, Any]:
        reads.append(queue.pop(0) if len(queue) > 1 else queue[0])
        return reads[-1]

    return reads, read


def test_peering_that_settles_passes_with_the_time_it_took() -> None:
    clock = FakeClock()
    reads, read = answers(PEERING_STATUS, PEERING_STATUS, OK)
    health = settle(read, clock)
    assert (health.state, health.problems, health.health) == (HEALTHY, [], "HEALTH_OK after 4.0 s of PG peering")
    assert clock.sleeps == [PEERING_POLL_S, PEERING_POLL_S] and len(reads) == 3
    assert health.summary == "HEALTH_OK after 4.0 s of PG peering; mon: 3 daemons, quorum a,b,c; osd: 3 osds: 3 up, 3 in"


def test_peering_that_does_not_settle_fails_at_the_bound() -> None:
    clock = FakeClock()
    reads, read = answers(PEERING_STATUS)
    health = settle(read, clock)
    assert health.state == PEERING and sum(clock.sleeps) == PEERING_BOUND_S == 30
    assert len(reads) == 1 + int(PEERING_BOUND_S / PEERING_POLL_S)
    assert health.problems == [
        f"PG peering that did not settle within 30 s: health is HEALTH_WARN, not HEALTH_OK (PG_AVAILABILITY: {AVAILABILITY}); pgs: 31 active+clean, 1 peering"
    ]


def test_a_healthy_cluster_is_read_once() -> None:
    clock = FakeClock()
    reads, read = answers(OK)
    health = settle(read, clock)
    assert (health.state, health.health, clock.sleeps, len(reads)) == (HEALTHY, "HEALTH_OK", [], 1)


def test_a_real_problem_fails_at_once_without_waiting() -> None:
    clock = FakeClock()
    down = ceph_status("HEALTH_WARN", {"OSD_DOWN": "1 osds down"}, {"active+undersized+degraded": 32}, up=2)
    reads, read = answers(down, OK)
    health = settle(read, clock)
    assert (health.state, clock.sleeps, len(reads)) == (PROBLEM, [], 1)
    assert health.problems == ["health is HEALTH_WARN, not HEALTH_OK (OSD_DOWN: 1 osds down)", "osd: 3 osds: 2 up, 3 in (every OSD must be up and in)"]
    assert health.health == "HEALTH_WARN"


def test_peering_with_an_osd_down_is_a_real_problem() -> None:
    checks = {"OSD_DOWN": "1 osds down", "PG_AVAILABILITY": AVAILABILITY}
    status = ceph_status("HEALTH_WARN", checks, {"active+clean": 31, "peering": 1}, up=2)
    assert classify(status) == PROBLEM
    clock = FakeClock()
    assert settle(answers(status)[1], clock).state == PROBLEM and clock.sleeps == []


def test_peering_that_turns_into_a_real_problem_stops_the_wait_with_it() -> None:
    clock = FakeClock()
    down = ceph_status("HEALTH_WARN", {"OSD_DOWN": "1 osds down", "PG_AVAILABILITY": AVAILABILITY}, {"peering": 32}, up=2)
    health = settle(answers(PEERING_STATUS, down)[1], clock)
    assert (health.state, health.peering_s, clock.sleeps) == (PROBLEM, 2.0, [2.0])
    assert health.summary.startswith("HEALTH_WARN after 2.0 s of PG peering; ")
    assert "osd: 3 osds: 2 up, 3 in (every OSD must be up and in)" in health.problems


DEGRADED = "Degraded data redundancy: 2/90 objects degraded (2.222%), 1 pg degraded"


@pytest.mark.parametrize(
    ("checks", "pgs"),
    [
        ({"PG_AVAILABILITY": AVAILABILITY}, {"active+clean": 31, "peering": 1}),
        ({"PG_AVAILABILITY": "Reduced data availability: 2 pgs inactive"}, {"active+clean": 30, "activating": 2}),
        ({"PG_DEGRADED": DEGRADED}, {"active+clean": 31, "active+recovering+degraded": 1}),
        ({"PG_AVAILABILITY": AVAILABILITY, "PG_DEGRADED": DEGRADED}, {"active+clean": 30, "peering": 1, "active+recovery_wait+degraded": 1}),
        ({"PG_AVAILABILITY": AVAILABILITY}, {"active+clean": 32}),  # the PG map is ahead of the health
    ],
    ids=["peering", "activating", "recovering", "peering-and-recovery-wait", "health-behind"],
)
def test_pg_peering_with_every_osd_up_is_transient(checks: dict[str, str], pgs: dict[str, int]) -> None:
    assert classify(ceph_status("HEALTH_WARN", checks, pgs)) == PEERING


@pytest.mark.parametrize(
    ("checks", "pgs", "up"),
    [
        ({"PG_AVAILABILITY": "Reduced data availability: 32 pgs inactive, 32 pgs stale"}, {"stale+active+clean": 32}, 3),
        ({"PG_AVAILABILITY": "Reduced data availability: 1 pg inactive, 1 pg down"}, {"active+clean": 31, "down": 1}, 3),
        ({"PG_AVAILABILITY": "Reduced data availability: 1 pg inactive"}, {"active+clean": 31, "unknown": 1}, 3),
        ({"PG_AVAILABILITY": "Reduced data availability: 1 pg inactive, 1 pg incomplete"}, {"active+clean": 31, "incomplete": 1}, 3),
        ({"PG_DEGRADED": "Degraded data redundancy: 32 pgs undersized"}, {"active+undersized": 32}, 3),
        ({"PG_AVAILABILITY": "Reduced data availability: 1 pg stuck inactive"}, {"active+clean": 31, "peering": 1}, 3),
        ({"PG_AVAILABILITY": AVAILABILITY, "SLOW_OPS": "2 slow ops, oldest one blocked for 33 sec"}, {"active+clean": 31, "peering": 1}, 3),
        ({"PG_AVAILABILITY": AVAILABILITY, "OSD_DOWN": "1 osds down"}, {"active+clean": 31, "peering": 1}, 2),
    ],
    ids=["stale", "down", "unknown", "incomplete", "undersized", "stuck", "slow-ops", "osd-down"],
)
def test_other_pg_trouble_is_a_real_problem(checks: dict[str, str], pgs: dict[str, int], up: int) -> None:
    assert classify(ceph_status("HEALTH_WARN", checks, pgs, up=up)) == PROBLEM


def test_peering_without_the_mon_quorum_is_a_real_problem() -> None:
    status = ceph_status("HEALTH_WARN", {"PG_AVAILABILITY": AVAILABILITY}, {"active+clean": 31, "peering": 1})
    status["quorum_names"] = ["a", "b"]
    assert classify(status) == PROBLEM


def test_without_the_pg_states_there_is_no_telling_peering() -> None:
    status = ceph_status("HEALTH_WARN", {"PG_AVAILABILITY": AVAILABILITY})
    del status["pgmap"]
    assert classify(status) == PROBLEM
