"""Issue #26, node maintenance: `python -m maintain` against the lab, with a stack of the whole program
(the real engine and plugin): three HA VMs on Ceph RBD, one per node.

1. `maintain pve-node1 --then 'sleep 12'`: while pve-node1 is in maintenance and free, `pulumi
   preview` and `pulumi up` show 0 changes and move nothing back.
2. `maintain --all --then reboot --json`: a rolling maintenance of the three nodes, each rebooted
   once free (the lab's graceful reboot: the LRM ends, the node powers off and on again). Every
   VM is live-migrated away and back, never restarted (the lab's VM process, its librbd lock holder, keeps its pid:
   the same guest), each disk's marker (sha256) is intact, each VM ends on its own node, and the
   report times every migration.
3. Refused before anything changes, exit 2: `--all` while a node is down; the maintenance of a
   node whose loss would cost quorum (another node down).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import lab
from lab import wait_for
from lab.pve.control import Control
from lab.testing.stack import LabStack, api, changes, forget_stack, names, node_online, remove_stack
from lab.testing.vms import DiskMarker, ha_placement, iso_vm

# needs the running lab and the Pulumi engine (the project's CLI and plugins) (tools/run-tests.sh selects by these marks)
pytestmark = [pytest.mark.lab, pytest.mark.engine]

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "mnt"
VMS = {460: "pve-node1", 461: "pve-node2", 462: "pve-node3"}


def edit(config: dict[str, Any]) -> None:
    names(PREFIX)(config)
    config["vms"] = [iso_vm(vmid, node, f"mnt{vmid}") for vmid, node in VMS.items()]
    config["allowPoolDeletion"] = True


def placed() -> dict[int, tuple[str, str]]:
    return ha_placement(list(VMS))


def ha_node(node: str) -> str | None:
    return (api().cluster.ha.status.manager_status.get().get("manager_status") or {}).get("node_status", {}).get(node)


def maintain(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "maintain", "--lab-file", str(ROOT / ".lab" / "lab.json"), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def mnt(lab_state: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabStack]:
    forget_stack(PREFIX, list(VMS))
    stack = LabStack(PREFIX, lab_state, tmp_path_factory.mktemp(PREFIX), edit)
    up = stack.up()
    assert up.summary.result == "succeeded", stack.text()[-3000:]
    wait_for("three VMs started on their nodes", lambda: placed() == {v: (n, "started") for v, n in VMS.items()}, 60)
    yield stack
    remove_stack(stack, PREFIX, list(VMS))


def test_preview_and_up_during_maintenance_change_nothing(mnt: LabStack) -> None:
    proc = maintain("pve-node1", "--then", "sleep 12")
    try:
        wait_for(
            "pve-node1 in maintenance and free",
            lambda: ha_node("pve-node1") == "maintenance" and placed()[460][0] != "pve-node1" and placed()[460][1] == "started",
            60,
        )
        away = placed()[460]
        assert changes(mnt.preview().change_summary) == {}, mnt.text()[-3000:]
        up = mnt.up()
        assert changes(up.summary.resource_changes or {}) == {}, mnt.text()[-3000:]
        assert placed()[460] == away and ha_node("pve-node1") == "maintenance"  # nothing moved back, maintenance kept
    finally:
        code, out, err = finished(proc)
    assert code == 0, out + err
    assert "maintenance done on pve-node1" in out, out
    wait_for("vm:460 back on pve-node1", lambda: placed()[460] == ("pve-node1", "started"), 60)


def test_rolling_maintenance_of_every_node_live(mnt: LabStack) -> None:
    markers = {vmid: DiskMarker(f"{PREFIX}-pool", vmid) for vmid in VMS}
    wait_for("three VMs started on their nodes", lambda: placed() == {v: (n, "started") for v, n in VMS.items()}, 60)
    pids = {vmid: Control().holders()[str(vmid)]["pid"] for vmid in VMS}
    t0 = time.monotonic()
    code, out, err = finished(maintain("--all", "--then", "reboot", "--json"), timeout=600)
    took = time.monotonic() - t0
    assert code == 0, out + err
    report = json.loads(out)
    assert report["outcome"] == "done" and [r["node"] for r in report["nodes"]] == list(VMS.values()), report
    print(f"\n  rolling maintenance of 3 nodes: {took:.1f} s")
    for run in report["nodes"]:
        assert run["outcome"] == "done", run
        assert run["then"]["rebooted"] is True, run
        vmid = next(v for v, n in VMS.items() if n == run["node"])
        (move,) = run["moves"]
        assert move["sid"] == f"vm:{vmid}" and move["source"] == run["node"] and move["target"] != run["node"], run
        (back,) = run["back"]
        assert back["sid"] == f"vm:{vmid}" and back["target"] == run["node"], run
        print(
            f"  {run['node']}: vm:{vmid} away {move['seconds']:.1f} s, reboot {run['then']['seconds']:.1f} s, back {back['seconds']:.1f} s, "
            f"the node's whole maintenance {run['seconds']:.1f} s"
        )
    assert placed() == {v: (n, "started") for v, n in VMS.items()}
    holders = Control().holders()
    assert {vmid: holders[str(vmid)]["pid"] for vmid in VMS} == pids  # live-migrated twice, never restarted
    assert all(marker.intact() for marker in markers.values())
    assert changes(mnt.preview().change_summary) == {}, mnt.text()[-3000:]


def test_refused_with_a_node_down(mnt: LabStack) -> None:
    lab.fault("pve-node3", "poweroff")
    try:
        wait_for("pve-node3 offline", lambda: not node_online("pve-node3"), 30)
        code, out, err = finished(maintain("--all"))
        assert code == 2, out + err
        assert "refused: pve-node3 is down: a rolling maintenance needs every node up" in out, out
        code, out, err = finished(maintain("pve-node1"))
        assert code == 2, out + err
        assert "without pve-node1 1 of 3 nodes stay online: quorum needs 2" in out, out
        assert ha_node("pve-node1") == "online" and placed()[460] == ("pve-node1", "started")  # nothing was done
        assert "Traceback" not in out + err
    finally:
        lab.fault("pve-node3", "restore")
    wait_for("pve-node3 online", lambda: node_online("pve-node3"), 120)
