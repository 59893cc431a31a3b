"""`python -m drill` against the lab: HA VMs on the real Ceph, real faults, real recoveries.

The lab's time scale is 0.1: a failover with an RBD disk takes ~30 s (lab/pve/README.md).
Every node the tests fault is restored afterwards, whatever happens.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from drill import report as reports
from lab.paths import ROOT
from lab.testing.observe import Observer
from lab.testing.seed import LAB_JSON, LabAccess, wait_ha_state

pytestmark = [pytest.mark.lab, pytest.mark.timeout(600)]  # lab: needs the running lab (tools/run-tests.sh selects by marks)
DEADLINE = "120"


def run_drill(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python -m drill --lab-file .lab/lab.json ARGS`, as an operator runs it."""
    return subprocess.run([sys.executable, "-m", "drill", "--lab-file", str(LAB_JSON), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(autouse=True)
def nodes_restored(lab_access: LabAccess) -> Iterator[None]:
    try:
        yield
    finally:
        lab_access.restore_all()


def started_vm(lab_access: LabAccess, ha_vm: Callable[..., str], vmid: int) -> tuple[str, str]:
    """An HA VM, started (a previous test's fault may have moved or restarted it); (sid, its node)."""
    sid = ha_vm(vmid)
    wait_ha_state(lab_access, sid)
    return sid, lab_access.service(sid)["node"]


# ---------------------------------------------------------------------- poweroff over SSH


@pytest.fixture(scope="module")
def poweroff_drill(lab_access: LabAccess, ha_vm: Callable[..., str]) -> dict[str, Any]:
    """One drill with `--method poweroff` (the node shim's `poweroff` over SSH), --json, watched by a fast observer."""
    sid, from_node = started_vm(lab_access, ha_vm, 601)
    observer = Observer(lab_access, 601, from_node, watch_node=next(n for n in lab_access.nodes if n != from_node))
    observer.start()
    try:
        run = run_drill("--vm", "601", "--method", "poweroff", "--yes", "--json", "--deadline", DEADLINE)
    finally:
        observer.stop()
        lab_access.restore_all()
    report = json.loads(run.stdout) if run.stdout.strip() else {}
    return {"run": run, "report": report, "sid": sid, "from": from_node, "observed_at": observer.seen_at}


def test_poweroff_over_ssh_recovers_the_vm_on_another_node(poweroff_drill):
    run, vm = poweroff_drill["run"], poweroff_drill["report"]["vms"][0]
    assert run.returncode == 0, run.stderr
    assert vm["recovered"] and vm["node"] not in (None, poweroff_drill["from"])
    assert f"vm:601 started on {vm['node']}" in run.stderr


def test_timeline_speaks_the_ha_managers_words(poweroff_drill):
    # fence and recovery can fall in one HA round (when the failed node was the master, the new
    # master acts after the old lock expired), so the fence line itself is not always there
    node, text = poweroff_drill["from"], poweroff_drill["run"].stderr
    new_node = poweroff_drill["report"]["vms"][0]["node"]
    assert f"{node}: offline (cluster/resources)" in text, text
    assert f"node '{node}': state changed from 'online' => 'unknown'" in text, text
    assert f"vm:601 ({new_node}, started)" in text, text


def test_report_matches_its_schema(poweroff_drill):
    report = poweroff_drill["report"]
    assert reports.problems(report) == []
    assert report["outcome"] == "recovered" and report["ok"] and report["method"] == "poweroff"


def test_report_times_follow_the_failover(poweroff_drill):
    vm = poweroff_drill["report"]["vms"][0]
    assert 0 <= vm["detection_s"] <= vm["fence_s"] <= vm["running_s"] <= float(DEADLINE)
    print(f"\npoweroff drill: detected {vm['detection_s']} s, fenced {vm['fence_s']} s, running {vm['running_s']} s on {vm['node']}")


def test_drill_reports_the_recovery_within_a_second_of_the_api(poweroff_drill):
    observed, reported = poweroff_drill["observed_at"], poweroff_drill["report"]["vms"][0]["running_at"]
    assert observed is not None, "the observer never saw the VM running elsewhere"
    lag = reported - observed
    print(f"\ndrill lag: {lag:+.3f} s (the API showed it started at {observed:.3f}, the drill reported it at {reported:.3f})")
    assert lag <= 1.0


# ---------------------------------------------------------------------- the lab's isolate fault


def test_isolate_through_the_lab_control_channel_recovers_and_restores(lab_access, ha_vm):
    sid, from_node = started_vm(lab_access, ha_vm, 602)
    run = run_drill("--vm", "602", "--method", "lab", "--fault", "isolate", "--yes", "--restore", "--deadline", DEADLINE)
    assert run.returncode == 0, run.stdout + run.stderr
    new_node = lab_access.service(sid)["node"]
    assert new_node != from_node and f"{sid} started on {new_node}" in run.stdout
    assert f"{from_node} is online again" in run.stdout


# ---------------------------------------------------------------------- refusals


def test_an_ha_vm_that_is_not_started_is_refused(lab_access, ha_vm):
    ha_vm(603, state="stopped")
    run = run_drill("--vm", "603", "--method", "lab", "--yes")
    assert run.returncode == 2
    assert "vm:603 is not started (HA state 'stopped')" in run.stdout and "nothing was done" in run.stdout
    assert all(n["power"] == "on" for n in lab_access.control("GET", "/status")["nodes"].values())


def test_a_failure_that_would_lose_quorum_is_refused(lab_access, ha_vm):
    sid, target = started_vm(lab_access, ha_vm, 602)
    busy = [r["node"] for r in lab_access.any_api().cluster.resources.get(type="vm")]
    down = min((n for n in lab_access.nodes if n != target), key=busy.count)  # spare the other tests' VMs
    lab_access.fault(down, "poweroff")
    run = run_drill("--vm", "602", "--method", "lab", "--yes")
    assert run.returncode == 2
    assert f"failing {target} would leave 1 of 3 nodes online: no quorum (a majority, 2, is needed)" in run.stdout
    assert lab_access.control("GET", "/status")["nodes"][target]["power"] == "on"


def test_ssh_refused_is_a_refusal_not_a_traceback(lab_access, ha_vm):
    _sid, target = started_vm(lab_access, ha_vm, 602)
    address = lab_access.ssh["hosts"][target]
    run = run_drill("--vm", "602", "--method", "poweroff", "--node-ssh", f"{target}={address}:2299", "--yes")
    assert run.returncode == 2
    assert f"SSH to root@{address}:2299 failed" in run.stdout and "Traceback" not in run.stdout + run.stderr


# ---------------------------------------------------------------------- the deadline


def test_a_missed_deadline_fails_with_a_clear_message(lab_access, ha_vm):
    sid, _node = started_vm(lab_access, ha_vm, 604)
    try:
        run = run_drill("--vm", "604", "--method", "lab", "--yes", "--restore", "--deadline", "1")
    finally:  # the node is back before it was fenced: its LRM restarts the VM once the RBD lock is free
        lab_access.restore_all()
        wait_ha_state(lab_access, sid, deadline=150)
    assert run.returncode == 1
    assert f"drill failed: {sid} not running on another node 1 s after the failure" in run.stdout
    assert "Traceback" not in run.stdout + run.stderr
