"""A hung OSD (`kill -STOP`, as a failing disk makes it) on the lab's Ceph: marked down by its peers
as on a multi-host cluster (lab/ceph.py: mon_osd_reporter_subtree_level), runbook 1-1 fails naming
it, and RBD answers again with the other two OSDs. Against the running lab (make test starts it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from components.ceph_health import PROBLEM, classify, status_problems
from lab import LabError, ceph, paths, wait_for

# needs the running lab (tools/run-tests.sh selects by these marks)
pytestmark = pytest.mark.lab

POOL = "hung-osd-pool"


def osd_up(i: int) -> bool:
    dump = ceph.ceph_json("osd", "dump")
    return any(o["osd"] == i and o["up"] for o in dump["osds"])


def rbd_ls(timeout: float) -> list[str]:
    argv = ["rbd", "--conf", str(paths.CEPH_CONF), "ls", POOL, "--format", "json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=True)
    return json.loads(done.stdout or "[]")


@pytest.fixture
def pool():
    if not paths.CEPH_CONF.exists():
        pytest.fail("the lab's Ceph is not up: run it through make test (python -m lab up first)")
    ceph.ceph("osd", "pool", "create", POOL, "8")
    ceph.ceph("osd", "pool", "application", "enable", POOL, "rbd")
    subprocess.run(["rbd", "--conf", str(paths.CEPH_CONF), "create", f"{POOL}/probe", "--size", "4M"], check=True, timeout=60)
    yield POOL
    ceph.ceph("osd", "pool", "delete", POOL, POOL, "--yes-i-really-really-mean-it")


def test_a_hung_osd_is_marked_down_and_rbd_answers_again(pool: str) -> None:
    assert ceph.ceph("config", "get", "mon", "mon_osd_reporter_subtree_level").strip() == "osd"
    pid = int(paths.pid_file("ceph-osd.0").read_text().split()[0])
    os.kill(pid, signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        wait_for("osd.0 marked down", lambda: not osd_up(0), 90, interval=1)
        marked = time.monotonic() - t0
        status = ceph.ceph_json("status")
        assert classify(status) == PROBLEM
        problems = "; ".join(status_problems(status))
        assert "OSD_DOWN" in problems and "2 up" in problems, problems
        assert "osd.0" in ceph.ceph("health", "detail")
        started = time.monotonic()
        assert rbd_ls(timeout=60) == ["probe"]
        answered = time.monotonic() - started
        print(f"\n  hung osd.0: marked down after {marked:.1f} s; rbd ls answered in {answered:.1f} s")
        assert marked < 60, f"osd.0 marked down only after {marked:.0f} s"
    finally:
        os.kill(pid, signal.SIGCONT)
    try:
        wait_for("osd.0 up again", lambda: osd_up(0), 120, interval=1)
        wait_for("HEALTH_OK", lambda: ceph.ceph_json("status")["health"]["status"] == "HEALTH_OK", 180, interval=2)
    except LabError as exc:
        raise AssertionError(f"the lab did not heal after osd.0 continued: {exc}") from None
