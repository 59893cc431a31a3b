"""Issue #20: with any one PVE node down, every command works and tells the truth.

The runbook's own layout: the API endpoint is pve-node1 (as in Pulumi.dev.yaml and the lab stack),
the HA VM runs on pve-node1, and pve-node1 is powered off (runbook step 7). Then a node that is
not the endpoint is cut from the network (its address drops connections: they time out). The
cells of the matrix this module runs, each moment and each command at least once:

| case | node down              | how       | moment                    | command                                  |
|------|------------------------|-----------|---------------------------|------------------------------------------|
| 1    | pve-node1 (endpoint)   | poweroff  | before the CRM marks it   | preview (0 changes, time)                |
| 2    | pve-node1              | poweroff  | fenced / recovering       | up: a VM and its HA resource on pve-node2 |
| 3    | pve-node1              | poweroff  | fenced / recovering       | up: a VM configured on pve-node1 (refused in one line, at once) |
| 4    | pve-node1              | poweroff  | after HA recovered the VM | preview, refresh, verify (only pve-node1's checks fail); import |
| 5    | pve-node1              | poweroff  | after recovery            | up: an HA resource removed; drift repaired |
| 6    | pve-node2 or 3 (not the endpoint) | cut | before the CRM marks it   | preview (0 changes, time)                |
| 7    | a node without the VMs | poweroff  | before the CRM marks it   | destroy                                  |

After each fault the node is restored and a preview of the stack must be clean.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pulumi import automation as auto

import lab
from lab import wait_for
from lab.testing.engine import cli
from lab.testing.shared import ha_clock
from lab.testing.stack import LabStack, api, changes, forget_stack, names, node_online, remove_stack
from lab.testing.steps import run_steps
from lab.testing.vms import iso_vm

# needs the running lab and the Pulumi engine (the project's CLI and plugins) (tools/run-tests.sh selects by these marks)
pytestmark = [pytest.mark.lab, pytest.mark.engine]

VM, ADDED, ON_DEAD, HAND = 241, 242, 243, 244
VM_TYPE = "proxmoxve:index/vmLegacy:VmLegacy"


def vm(vmid: int, node: str, **extra: Any) -> dict[str, Any]:
    return iso_vm(vmid, node, **extra)


def edit(config: dict[str, Any]) -> None:
    names("nd")(config)
    assert config["proxmox"]["endpoint"] == "https://127.10.20.11:8006"  # the runbook's layout: the endpoint is pve-node1
    config["vms"] = [vm(VM, "pve-node1")]


@pytest.fixture(scope="module")
def nd(lab_state: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabStack]:
    forget_stack("nd", [VM, ADDED, ON_DEAD, HAND])
    stack = LabStack("nd", lab_state, tmp_path_factory.mktemp("nd"), edit)
    stack.up()
    stack.timings = {"healthy preview": timed(stack.preview)[0]}  # type: ignore[attr-defined]
    yield stack
    remove_stack(stack, "nd", [VM, ADDED, ON_DEAD, HAND])


def timed(command: Any) -> tuple[float, Any]:
    started = time.monotonic()
    result = command()
    return time.monotonic() - started, result


def clean_preview(stack: LabStack, label: str) -> tuple[float, auto.PreviewResult]:
    took, result = timed(stack.preview)
    assert changes(result.change_summary) == {}, f"{label}: {result.change_summary}\n{result.stdout[-3000:]}"
    print(f"\n  {label}: preview {took:.1f} s, 0 changes")
    return took, result


def within_healthy(stack: LabStack, took: float, label: str) -> None:
    healthy = stack.timings["healthy preview"]  # type: ignore[attr-defined]
    stack.timings[label] = took  # type: ignore[attr-defined]
    # about 2 s: one connection bound for the dead endpoint, plus the lab's 2-core noise
    assert took <= healthy + 4.0, f"{label}: {took:.1f} s against {healthy:.1f} s on a healthy cluster"


def where(vmid: int) -> tuple[str | None, str | None]:
    found = next((r for r in api().cluster.resources.get(type="vm") if r["vmid"] == vmid), {})
    return found.get("node"), found.get("status")


def restore(node: str) -> None:
    lab.fault(node, "restore")
    wait_for(f"{node} online", lambda: node_online(node), 120)


def endpoint_node_powered_off_preview_at_once_shows_no_change(nd: LabStack) -> None:
    assert where(VM)[0] == "pve-node1"
    lab.fault("pve-node1", "poweroff")
    took, result = clean_preview(nd, "endpoint's node just powered off")
    within_healthy(nd, took, "preview, endpoint down (early)")
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: HA preflight: pve-node1")]
    assert len(warnings) == 1 and "quorum holds" in warnings[0], result.stderr[-2000:]


def up_adds_a_vm_and_its_ha_resource_on_a_live_node(nd: LabStack) -> None:
    nd.reconfigure(lambda c: c["vms"].append(vm(ADDED, "pve-node2")))
    took, result = timed(nd.up)
    assert result.summary.resource_changes.get("create", 0) >= 2, result.summary.resource_changes  # the VM and its HA resource
    assert where(ADDED) == ("pve-node2", "running")
    print(f"\n  up with a VM and its HA resource, endpoint down: {took:.1f} s")


def a_vm_on_the_dead_node_is_refused_in_one_line_at_once(nd: LabStack) -> None:
    nd.reconfigure(lambda c: c["vms"].append(vm(ON_DEAD, "pve-node1")))
    try:
        started = time.monotonic()
        with pytest.raises(auto.CommandError) as failed:
            nd.up()
        took = time.monotonic() - started
        text = str(failed.value)
        line = next((ln for ln in text.splitlines() if f"cannot create VM {ON_DEAD}" in ln), "")
        assert "its node pve-node1 is offline" in line and "vms[].node" in line, text[-3000:]
        assert "Traceback" not in text
        assert took < 90, f"the refusal took {took:.0f} s"
        assert where(ON_DEAD) == (None, None)
    finally:
        nd.reconfigure(lambda c: c.__setitem__("vms", [v for v in c["vms"] if v["id"] != ON_DEAD]))
    nd.up()  # the refused VM's component goes from the state; nothing else changes


def after_ha_recovered_the_vm_preview_refresh_and_verify_tell_the_truth(nd: LabStack) -> None:
    with ha_clock():  # what the stack says after the recovery is the point here, not when it came
        wait_for("VM recovered on another node", lambda: where(VM)[0] not in (None, "pve-node1") and where(VM)[1] == "running", 240)
    clean_preview(nd, "after the failover, endpoint still down")
    nd.refresh()
    code, report, lines = nd.verify()
    failing = {c["id"] for c in report["checks"] if c["status"] != "pass"}
    assert failing == {"ceph-common", "storage", "ha-services", "ha-quorum"} and code == 1, lines


def import_works_with_the_endpoint_down(nd: LabStack, tmp_path: Path) -> None:
    """`pulumi import` of a VM made by hand on a live node, with the stack's provider (its recorded
    configuration holds the fallback nodes), while pve-node1 (the endpoint) is still down."""
    api().nodes("pve-node2").qemu.post(vmid=HAND, name=f"vm{HAND}", memory=128, cores=1)
    wait_for("the hand-made VM", lambda: where(HAND)[0] == "pve-node2", 30)
    resources = nd.stack.export_stack().deployment["resources"]
    provider = next(r["urn"] for r in resources if r["type"] == "pulumi:providers:proxmoxve")
    spec = {"nameTable": {"pve": provider}, "resources": [{"type": VM_TYPE, "name": f"hand{HAND}", "id": f"pve-node2/{HAND}", "provider": "pve"}]}
    (tmp_path / "import.json").write_text(json.dumps(spec))
    try:
        done = cli(nd.env, "import", "--file", str(tmp_path / "import.json"), "--yes", "--protect=false", "--generate-code=false", "--stack", "nd", cwd=nd.work)
        assert done.returncode == 0, done.stdout + done.stderr
        imported = [r for r in nd.stack.export_stack().deployment["resources"] if r["type"] == VM_TYPE and r.get("id") == str(HAND)]
        assert len(imported) == 1 and imported[0]["outputs"]["nodeName"] == "pve-node2", imported
    finally:  # the program does not declare it: out of the state again, and gone from PVE
        cli(nd.env, "state", "delete", "--force", "--yes", "--stack", "nd", f"urn:pulumi:nd::pve-ceph-ha::{VM_TYPE}::hand{HAND}", cwd=nd.work)
        api().nodes("pve-node2").qemu(HAND).delete()


def up_removes_an_ha_resource_and_repairs_drift(nd: LabStack) -> None:
    api().cluster.ha.resources(f"vm:{VM}").put(max_restart=3)  # drift, made while pve-node1 is down
    nd.reconfigure(lambda c: [v.__setitem__("ha", False) for v in c["vms"] if v["id"] == ADDED])
    nd.up()
    status = {r["sid"]: r for r in api().cluster.ha.resources.get()}
    assert f"vm:{ADDED}" not in status and int(status[f"vm:{VM}"]["max_restart"]) == 1, status
    restore("pve-node1")
    clean_preview(nd, "pve-node1 back")


def a_node_cut_from_the_network_costs_no_more_than_the_bound(nd: LabStack) -> None:
    # not the endpoint, and not the node of the VM without HA (a cut node is reset by its
    # watchdog while it has HA services: a VM without HA would stay stopped, a drift of its own)
    cut = next(n for n in ("pve-node2", "pve-node3") if n != where(ADDED)[0])
    lab.fault(cut, "isolate")
    try:
        took, _ = clean_preview(nd, f"{cut} cut from the network")
        within_healthy(nd, took, "preview, a node cut (early)")
    finally:
        restore(cut)
    wait_for("the HA VM running", lambda: where(VM)[1] == "running", 240)
    clean_preview(nd, f"{cut} back")


def destroy_with_a_node_down(nd: LabStack) -> None:
    free = next(n for n in ("pve-node3", "pve-node2", "pve-node1") if n not in {where(v)[0] for v in (VM, ADDED)})
    lab.fault(free, "poweroff")
    try:
        nd.destroy()
        assert where(VM) == (None, None) and where(ADDED) == (None, None)
    finally:
        restore(free)
    print("\n  figures: " + ", ".join(f"{k} {v:.1f} s" for k, v in nd.timings.items()))  # type: ignore[attr-defined]


def test_a_node_down_from_the_endpoints_to_destroy(nd: LabStack, tmp_path: Path) -> None:
    """One stack through a dead endpoint, HA's recovery, a cut node and a destroy with a node down,
    each step starting where the one before left it (lab/testing/steps.py)."""
    run_steps(
        [
            endpoint_node_powered_off_preview_at_once_shows_no_change,
            up_adds_a_vm_and_its_ha_resource_on_a_live_node,
            a_vm_on_the_dead_node_is_refused_in_one_line_at_once,
            after_ha_recovered_the_vm_preview_refresh_and_verify_tell_the_truth,
            import_works_with_the_endpoint_down,
            up_removes_an_ha_resource_and_repairs_drift,
            a_node_cut_from_the_network_costs_no_more_than_the_bound,
            destroy_with_a_node_down,
        ],
        nd=nd,
        tmp_path=tmp_path,
    )
