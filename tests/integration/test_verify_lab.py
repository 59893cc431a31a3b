"""`python -m verify` against the lab: every check passes on a converged stack, and each check
fails with its own message when the lab is broken on purpose, the way an operator (or an
accident) breaks a real cluster: an OSD down, a storage's key wrong, a node powered off, an HA
service stopped, a VM's image gone from the pool, the client's caps widened; and a best practice
broken warns, or fails once bestPractices.enforce names it.

One converged stack (its own pool, client, storage and VM 481) serves every case; each case puts
the lab back, and the next one starts by checking that verify passes again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import lab
from lab import wait_for
from lab.pve.control import Control
from lab.testing.stack import LabStack, admin, api, forget_stack, names, node_online, node_shell

# needs the running lab and the Pulumi engine (the project's CLI and plugins) (tools/run-tests.sh selects by these marks)
pytestmark = [pytest.mark.lab, pytest.mark.engine]

PREFIX, VM = "vfy", 481
POOL, STORAGE, CLIENT, SID = f"{PREFIX}-pool", f"{PREFIX}-rbd", PREFIX, f"vm:{VM}"
CHECKS = 20  # verify/checks.py: 13 of the runbook (5: resources, placement, resource affinity, the shutdown policy) and 7 best practices
NODES = ("pve-node1", "pve-node2", "pve-node3")


def edit(config: dict[str, Any]) -> None:
    names(PREFIX)(config)
    config["vms"] = [{**config["vms"][0], "id": VM, "name": f"vm{VM}", "node": "pve-node1"}]


@pytest.fixture(scope="module")
def stack(lab_state: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabStack]:
    forget_stack(PREFIX, [VM])
    vstack = LabStack(PREFIX, lab_state, tmp_path_factory.mktemp(PREFIX), edit)
    assert vstack.up().summary.result == "succeeded"
    wait_for(f"{SID} running", lambda: vm_status() == "running", 120)
    yield vstack
    vstack.retire(CLIENT)


def vm_status() -> str | None:
    return next((str(r["status"]) for r in api().cluster.resources.get(type="vm") if r["vmid"] == VM), None)


def broken(stack: LabStack, failing: set[str], status: str = "fail") -> dict[str, dict[str, Any]]:
    """Verify the broken lab: exactly the checks FAILING have STATUS (each with its own message) and
    every other check passes, so the lab is otherwise healthy (the previous case put it back).
    The findings by id."""
    t0 = time.monotonic()
    code, report, lines = stack.verify()
    found = {c["id"]: c for c in report["checks"]}
    print(f"\n  verify ({time.monotonic() - t0:.1f} s, exit {code}):\n" + "\n".join(f"    {line}" for line in lines.splitlines() if not line.startswith("✓")))
    assert {i: c["status"] for i, c in found.items() if c["status"] != "pass"} == dict.fromkeys(failing, status), lines
    assert code == (1 if status == "fail" else 0), lines
    return found


def lrm_state(node: str) -> str:
    """The LRM's state in `ha-manager status` (active, idle, restart mode, old timestamp - dead?)."""
    line = next(line for line in node_shell("pve-node1", "ha-manager status").splitlines() if line.startswith(f"lrm {node} ("))
    return line.split("(", 1)[1].split(",")[0]


def test_every_check_passes_on_the_converged_stack(stack: LabStack) -> None:
    wait_for("every verify check passing", lambda: stack.verify()[0] == 0, 120, interval=2)
    t0 = time.monotonic()
    code, report, lines = stack.verify()
    print(f"\n  verify: {time.monotonic() - t0:.1f} s (the command's own figure: {report['duration_s']} s)\n{lines}")
    assert code == 0 and report["outcome"] == "passed", lines
    assert report["counts"] == {"pass": CHECKS, "fail": 0, "warn": 0, "error": 0}, lines
    assert f"✓ 3-2 rbd ls {POOL}: every VM's disks in the pool: rbd ls {POOL}: vm-{VM}-disk-0" in lines
    assert f"✓ 5 ha-manager status: every HA VM started (max restart 1, max relocate 1): {SID} started on pve-node1" in lines


def test_an_osd_down_fails_ceph_health(stack: LabStack) -> None:
    admin("ceph osd set noup && ceph osd down 2")  # the OSD stays down: noup keeps it from booting back
    try:
        wait_for("osd.2 down", lambda: json.loads(admin("ceph osd dump -f json"))["osds"][2]["up"] == 0, 30)
        finding = broken(stack, {"ceph-health"})["ceph-health"]
        assert "osd: 3 osds: 2 up, 3 in (every OSD must be up and in)" in finding["problems"]
    finally:
        admin("ceph osd unset noup")
    wait_for("HEALTH_OK again", lambda: json.loads(admin("ceph health -f json"))["status"] == "HEALTH_OK", 120, interval=1)


def test_a_wrong_storage_key_fails_the_storage_check(stack: LabStack) -> None:
    keyring = Path(lab.load()["pve"]["ca_file"]).parent.parent / "priv" / "ceph" / f"{STORAGE}.keyring"
    good = keyring.read_text()
    other = admin("ceph-authtool --gen-print-key").strip()  # a well-formed key that Ceph does not know
    keyring.write_text(f"[client.{CLIENT}]\n\tkey = {other}\n")
    try:
        finding = broken(stack, {"storage"})["storage"]
        assert all("Status is not Active" in p for p in finding["problems"]) and len(finding["problems"]) == 3, finding
        assert f"/etc/pve/priv/ceph/{STORAGE}.keyring" in finding["fix"]
    finally:
        keyring.write_text(good)
    wait_for("the storage active again", lambda: all(api().nodes(n).storage(STORAGE).status.get()["active"] == 1 for n in NODES), 60)


def test_a_node_offline_fails_its_services_and_quorum(stack: LabStack) -> None:
    lab.fault("pve-node3", "poweroff")
    try:
        wait_for("pve-node3 offline", lambda: not node_online("pve-node3"), 60)
        found = broken(stack, {"ceph-common", "storage", "ha-services", "ha-quorum"})
        assert any(p.startswith("pve-node3 does not answer SSH") for p in found["ha-services"]["problems"]), found["ha-services"]
        assert "pve-node3 is offline in the cluster (pvecm status)" in found["ha-quorum"]["problems"], found["ha-quorum"]
    finally:
        lab.fault("pve-node3", "restore")
    wait_for("pve-node3 online, its LRM too", lambda: node_online("pve-node3") and lrm_state("pve-node3") in ("active", "idle"), 120)


def test_an_ha_service_stopped_fails_the_services_check(stack: LabStack) -> None:
    node_shell("pve-node2", "systemctl stop pve-ha-lrm")
    try:
        # PVE's LRM.pm: a stopped LRM writes `restart mode` once, and its status then grows old
        wait_for("lrm pve-node2 old", lambda: lrm_state("pve-node2") == "old timestamp - dead?", 60)
        found = broken(stack, {"ha-services", "ha-quorum"})
        assert found["ha-services"]["problems"] == ["pve-node2: pve-ha-lrm is inactive, not active (running); start it: systemctl start pve-ha-lrm"]
        assert found["ha-quorum"]["problems"] == ["pve-node2 is not online: lrm pve-node2 (old timestamp - dead?)"]
    finally:
        node_shell("pve-node2", "systemctl start pve-ha-lrm")
    wait_for("lrm pve-node2 back", lambda: lrm_state("pve-node2") in ("active", "idle"), 60)


def test_a_vm_image_gone_from_the_pool_fails_the_images_check(stack: LabStack) -> None:
    admin(f"rbd mv {POOL}/vm-{VM}-disk-0 {POOL}/vm-{VM}-disk-0.moved-away")  # gone from PVE's view, the data kept
    try:
        finding = broken(stack, {"images"})["images"]
        assert finding["problems"] == [f"VM {VM}: no vm-{VM}-disk-0 in pool {POOL}"]
        assert "do not start the VM" in finding["fix"]
    finally:
        admin(f"rbd mv {POOL}/vm-{VM}-disk-0.moved-away {POOL}/vm-{VM}-disk-0")


def test_widened_caps_fail_the_client_check(stack: LabStack) -> None:
    admin(f"ceph auth caps client.{CLIENT} mon 'allow *' osd 'allow *'")
    try:
        finding = broken(stack, {"client"})["client"]
        assert finding["problems"] == [f"client.{CLIENT} has caps mon 'allow *' osd 'allow *', configured mon 'profile rbd' osd 'profile rbd pool={POOL}'"]
    finally:
        admin(f"ceph auth caps client.{CLIENT} mon 'profile rbd' osd 'profile rbd pool={POOL}'")


def enforce(stack: LabStack, names_: list[str]) -> None:
    def change(config: dict[str, Any]) -> None:
        config["bestPractices"] = {"enforce": names_}

    stack.reconfigure(change)


def vm_cpu(cpu: str) -> None:
    """The VM's CPU type changed in its config, as in the GUI (Hardware → Processors → Type)."""
    api().nodes("pve-node1").qemu(VM).config.put(cpu=cpu)


BEST_PRACTICES: dict[str, tuple[str, Callable[[], None], Callable[[], None]]] = {
    "cpu-type": ("cpuType", lambda: vm_cpu("host"), lambda: vm_cpu("x86-64-v2-AES")),
    "watchdog": ("watchdog", lambda: node_shell("pve-node1", "systemctl stop watchdog-mux"), lambda: node_shell("pve-node1", "systemctl start watchdog-mux")),
    "mtu": ("mtu", lambda: lab.set_node_link("pve-node2", "lo", mtu=1500), lambda: lab.reset_node_net("pve-node2")),
    "bridge": ("bridge", lambda: lab.set_node_link("pve-node3", "lo", master="vmbr0"), lambda: lab.reset_node_net("pve-node3")),
    "ceph-networks": (
        "cephNetworks",
        lambda: admin("ceph config set global cluster_network 127.10.10.0/24"),
        lambda: admin("ceph config set global cluster_network 127.10.30.0/24"),
    ),
    "scrub-window": ("scrubWindow", lambda: admin("ceph config set osd osd_scrub_begin_hour 8"), lambda: admin("ceph config set osd osd_scrub_begin_hour 22")),
}


@pytest.mark.parametrize("check", sorted(BEST_PRACTICES))
def test_a_broken_best_practice_warns_and_fails_when_enforced(stack: LabStack, check: str) -> None:
    name, breaks, mends = BEST_PRACTICES[check]
    breaks()
    try:
        warned = broken(stack, {check}, "warn")[check]
        assert warned["problems"] and not warned["enforced"]
        enforce(stack, [name])
        assert broken(stack, {check}, "fail")[check]["enforced"]
    finally:
        enforce(stack, [])
        mends()


def test_verify_changes_nothing(stack: LabStack) -> None:
    """Read-only: the lab's PVE API saw only GETs from verify, and the stack previews no change."""
    t0 = time.time()
    assert stack.verify()[0] == 0
    calls = lab.pve.calls(t0, agent="python-requests")
    assert calls and {c["method"] for c in calls} == {"GET"}, {(c["method"], c["path"]) for c in calls if c["method"] != "GET"}
    preview = stack.preview()
    assert {op: n for op, n in preview.change_summary.items() if op != "same" and n} == {}
    assert Control().ping()
