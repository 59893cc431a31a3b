"""VMs as operators build them (issue #25), through the real program, engine and plugin on the lab.

The stack makes a template from the lab's cloud image (a qcow2 on `local`, a 1 MiB marker at
16 MiB: lab/pve/imports.py) and three clones of it: a linked clone by DHCP with two disks, two
NICs (one on VLAN 20), tags, notes, a start order and a PVE pool; a full clone with a static
address; a linked clone with a static address. Read back from Ceph and the API: the linked clones'
disks are RBD clones of the template's base image, the full clone's a copy, each holds the marker,
each cloud-init drive holds its user, key and address, the MACs are the program's. Then the
running HA VM is changed three ways, each followed by a clean preview and an intact marker: a
disk grown online and a NIC added (the VM's process never stops), memory raised (a restart through
the HA manager; the VM ends started). A shrink, a new clone mode and a dropped template are
refused before any change. `pulumi destroy` removes the clones, then the template; a linked
clone made by hand keeps the template's base image, as PVE keeps it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pulumi import automation as auto

import lab.pve
from components.config_vm import NicSpec
from components.ha_vm import mac_address
from lab.pve import imports
from lab.pve.control import Control
from lab.testing import rbd
from lab.testing.stack import LabStack, admin, api, forget_stack, names, planned_changes

pytestmark = [pytest.mark.lab, pytest.mark.engine]

PREFIX = "vmb"
POOL, STORAGE, PVE_POOL = f"{PREFIX}-pool", f"{PREFIX}-rbd", "vmb-web"
TEMPLATE, WEB, FULL, STATIC, BY_HAND = 970, 971, 972, 973, 979
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPqP8a6dM2oSfqkKQ9x0kbbR8q1kXk7zX1nVt0yq3pQe ops@example"
NETWORK_DHCP = "      - type: dhcp4\n"


def static(address: str) -> str:
    return f"      - type: static\n        address: '{address}'\n        netmask: '255.255.255.0'\n        gateway: '192.0.2.1'\n"


def edit(config: dict[str, Any]) -> None:
    names(PREFIX)(config)
    config["ha"] = {**config["ha"], "affinities": []}
    config["templates"] = [{"id": TEMPLATE, "name": "golden", "node": "pve-node1", "image": f"local:import/{imports.QCOW2}", "diskGb": 1}]
    cloud = {"user": "ops", "sshKeys": [KEY], "dns": ["192.0.2.53"]}
    config["vms"] = [
        {
            "id": WEB,
            "name": f"web{WEB}",
            "node": "pve-node1",
            "cores": 1,
            "memoryMb": 512,
            "clone": {"template": TEMPLATE},
            "cloudInit": cloud,
            "disks": [{"sizeGb": 2}, {"sizeGb": 1, "cache": "none"}],
            "nics": [{"bridge": "vmbr0"}, {"bridge": "vmbr0", "vlan": 20}],
            "tags": ["web"],
            "description": "the web tier",
            "startOrder": 2,
            "pvePool": PVE_POOL,
        },
        {
            "id": FULL,
            "name": f"full{FULL}",
            "node": "pve-node1",
            "cores": 1,
            "memoryMb": 512,
            "diskGb": 1,
            "clone": {"template": TEMPLATE, "full": True},
            "cloudInit": {**cloud, "ip": "192.0.2.10/24", "gateway": "192.0.2.1"},
        },
        {
            "id": STATIC,
            "name": f"static{STATIC}",
            "node": "pve-node1",
            "cores": 1,
            "memoryMb": 512,
            "diskGb": 1,
            "ha": False,
            "clone": {"template": TEMPLATE},
            "cloudInit": {**cloud, "ip": "192.0.2.11/24", "gateway": "192.0.2.1"},
        },
    ]


def forget() -> None:
    forget_stack(PREFIX, [BY_HAND, WEB, FULL, STATIC, TEMPLATE])
    if any(p.get("poolid") == PVE_POOL for p in api().pools.get()):
        api().pools(PVE_POOL).delete()


@pytest.fixture(scope="module")
def vmb(lab_state: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabStack]:
    forget()
    api().pools.post(poolid=PVE_POOL)  # the operator's PVE pool: the stack names it, never makes it
    stack = LabStack(PREFIX, lab_state, tmp_path_factory.mktemp(PREFIX), edit)
    yield stack
    stack.remove()
    forget()


def images() -> dict[str, dict[str, Any]]:
    return {str(i["image"]) + (f"@{i['snapshot']}" if i.get("snapshot") else ""): i for i in json.loads(admin(f"rbd ls -l --format json {POOL}"))}


def config_of(vmid: int) -> dict[str, Any]:
    return dict(api().nodes("pve-node1").qemu(vmid).config.get())


def marker_intact(vmid: int) -> None:
    expected = hashlib.sha256(imports.marker()).hexdigest()
    got = hashlib.sha256(rbd.read(POOL, f"vm-{vmid}-disk-0", imports.MARKER_AT, len(imports.marker()))).hexdigest()
    assert got == expected, f"VM {vmid}'s disk lost the template's marker"


def up_makes_the_template_and_three_clones(vmb: LabStack) -> None:
    t0 = time.time()
    result = vmb.up()
    print(f"\n  a template and three clones, with the stack's Ceph and storage: {time.time() - t0:.1f} s, {result.summary.resource_changes}")
    assert result.summary.result == "succeeded"
    assert lab.pve.unmodelled(t0) == []
    calls = {(c["method"], c["path"].split("/")[-1]) for c in lab.pve.calls(t0, agent="Go-http-client")}
    assert {("POST", "template"), ("POST", "clone")} <= calls, sorted(calls)


def the_disks_are_the_templates_bytes(vmb: LabStack) -> None:
    held = images()
    base = f"base-{TEMPLATE}-disk-0"
    assert held[f"{base}@__base__"]["protected"] == "true", held
    for vmid in (WEB, STATIC):
        assert held[f"vm-{vmid}-disk-0"]["parent"]["image"] == base, held  # linked: an RBD clone
    assert "parent" not in held[f"vm-{FULL}-disk-0"], held  # full: a copy
    assert held[f"vm-{WEB}-disk-1"]["size"] == 1024**3 and "parent" not in held[f"vm-{WEB}-disk-1"], held  # scsi1: a new disk
    assert held[f"vm-{WEB}-disk-0"]["size"] == 2 * 1024**3, held  # a linked clone grown past its template (RBDPlugin volume_resize)
    for vmid in (WEB, FULL, STATIC):
        marker_intact(vmid)
        assert held[f"vm-{vmid}-cloudinit"]["size"] == 4 * 1024**2


def each_cloud_init_drive_holds_its_user_key_and_address(vmb: LabStack, tmp_path: Path) -> None:
    for vmid, network in ((WEB, NETWORK_DHCP), (FULL, static("192.0.2.10")), (STATIC, static("192.0.2.11"))):
        folder = tmp_path / str(vmid)
        folder.mkdir()
        files = rbd.cloudinit_files(POOL, vmid, folder)
        assert f"user: ops\nssh_authorized_keys:\n  - {KEY}\n" in files["user-data"], files["user-data"]
        assert network in files["network-config"] and "      - '192.0.2.53'\n" in files["network-config"], files["network-config"]


def the_vm_is_as_configured(vmb: LabStack) -> None:
    config = config_of(WEB)
    assert config["net0"].startswith(f"virtio={mac_address(WEB, 0, NicSpec())},bridge=vmbr0,"), config
    assert config["net1"].startswith(f"virtio={mac_address(WEB, 1, NicSpec())},bridge=vmbr0,") and ",tag=20" in config["net1"], config
    assert "cache=none" in config["scsi1"] and "cache=writeback" in config["scsi0"], config
    assert config["description"] == "the web tier" and config["startup"] == "order=2", config
    assert set(str(config["tags"]).split(";")) == {"web", f"pulumi-stack.pve-ceph-ha.{PREFIX}"}, config
    members = api().pools(PVE_POOL).get()["members"]
    assert [m["vmid"] for m in members] == [WEB], members
    assert {r["sid"] for r in api().cluster.ha.resources.get()} >= {f"vm:{WEB}", f"vm:{FULL}"}


def a_preview_after_the_up_plans_nothing_and_verify_passes(vmb: LabStack) -> None:
    assert planned_changes(vmb) == set(), vmb.text()[-3000:]
    checks = vmb.verified()  # every check, the runbook's 3-2 (each VM's disks in `rbd ls`) included
    print(f"\n  verify: {len(checks)} checks pass")


def holder_pid(vmid: int) -> int:
    return int(Control().holders()[str(vmid)]["pid"])


def change_web(vmb: LabStack, **change: Any) -> None:
    def apply(config: dict[str, Any]) -> None:
        config["vms"][0] = {**config["vms"][0], **change}

    vmb.reconfigure(apply)


def a_disk_grows_online_and_a_nic_is_hot_plugged(vmb: LabStack) -> None:
    pid = holder_pid(WEB)
    change_web(vmb, disks=[{"sizeGb": 2}, {"sizeGb": 2, "cache": "none"}], nics=[{"bridge": "vmbr0"}, {"bridge": "vmbr0", "vlan": 20}, {"vlan": 30}])
    said = f"warning: vms[0] (web{WEB}): scsi1 grown online 1 → 2 GiB (rbd resize, no restart), net2 on vmbr0 (VLAN 30) hot-plugged; no restart"
    shown = vmb.preview().stderr  # what the operator's terminal shows of the providers' warnings
    assert said in shown.splitlines(), shown[-3000:]
    assert vmb.up().summary.result == "succeeded"
    assert images()[f"vm-{WEB}-disk-1"]["size"] == 2 * 1024**3
    config = config_of(WEB)
    assert config["net2"].startswith(f"virtio={mac_address(WEB, 2, NicSpec())},bridge=vmbr0,") and ",tag=30" in config["net2"], config
    pending = api().nodes("pve-node1").qemu(WEB).pending.get()
    assert not [p for p in pending if "pending" in p or "delete" in p], pending  # hot-plugged, not pending
    assert holder_pid(WEB) == pid, "the VM's process was restarted"
    marker_intact(WEB)
    assert planned_changes(vmb) == set(), vmb.text()[-3000:]


def memory_restarts_the_vm_through_ha(vmb: LabStack) -> None:
    pid = holder_pid(WEB)
    before = set(Control().ha_log())
    change_web(
        vmb, memoryMb=1024, disks=[{"sizeGb": 2}, {"sizeGb": 2, "cache": "none"}], nics=[{"bridge": "vmbr0"}, {"bridge": "vmbr0", "vlan": 20}, {"vlan": 30}]
    )
    shown = vmb.preview().stderr
    said = f"vms[0] (web{WEB}): memory 512 MiB → 1024 MiB; the VM restarts: shut down and started again through the HA manager, and ends started"
    assert said in shown, shown[-3000:]
    assert vmb.up().summary.result == "succeeded"
    config = config_of(WEB)
    assert int(config["memory"]) == 1024
    status = api().nodes("pve-node1").qemu(WEB).status.current.get()
    assert status["status"] == "running" and status.get("ha", {}).get("state") == "started", status
    assert holder_pid(WEB) != pid, "the VM was not restarted: its memory change is still pending"
    log = "\n".join(line for line in Control().ha_log() if line not in before)
    assert f"vm:{WEB}" in log, log  # the stop and the start went through the HA manager
    marker_intact(WEB)
    assert planned_changes(vmb) == set(), vmb.text()[-3000:]


def refused(vmb: LabStack) -> str:
    with pytest.raises(auto.CommandError) as info:
        vmb.preview()
    return f"{info.value}\n{vmb.text()}"


def data_losing_changes_are_refused_before_any_change(vmb: LabStack) -> None:
    before = images()
    web = dict(vmb.config["vms"][0])
    change_web(vmb, disks=[{"sizeGb": 2}, {"sizeGb": 1, "cache": "none"}])
    assert "vms[0].disks[1].sizeGb = 1: scsi1 of vms[0] (web971) is 2 GiB and a disk cannot shrink" in refused(vmb)
    change_web(vmb, disks=web["disks"], clone={"template": TEMPLATE, "full": True})
    assert "vms[0].clone = a full clone of 970: vms[0] (web971) was made as a linked clone of 970" in refused(vmb)

    def drop_template(config: dict[str, Any]) -> None:
        config["vms"][0] = web
        config["templates"] = []

    vmb.reconfigure(drop_template)
    assert "vms[0].clone.template = 970: template 970 'golden' is this stack's and is no longer in templates" in refused(vmb)
    vmb.reconfigure(edit)  # back as made
    vmb.reconfigure(lambda config: config["vms"].__setitem__(0, web))
    assert images() == before


def a_replacement_needs_the_flag_and_shows_as_one(vmb: LabStack) -> None:
    """The full clone made a linked one, with vms[1].allowReplace: the plan shows the VM and its HA
    resource replaced; after the up the VM is an RBD clone of the base image, HA-managed and
    started, and the next preview is clean."""

    def linked(config: dict[str, Any]) -> None:
        config["vms"][1] = {**config["vms"][1], "clone": {"template": TEMPLATE}, "allowReplace": True}

    vmb.reconfigure(linked)
    ops: dict[str, set[str]] = {}

    def seen(event: Any) -> None:
        pre = event.resource_pre_event
        if pre is not None:
            ops.setdefault(pre.metadata.urn.rsplit("::", 1)[-1], set()).add(str(pre.metadata.op).lower())

    vmb.stack.preview(on_event=seen, color="never")
    for name in (f"{PREFIX}-full{FULL}-vm", f"{PREFIX}-full{FULL}-ha"):
        assert any("replace" in op for op in ops[name]), (name, ops[name])
    assert vmb.up().summary.result == "succeeded", vmb.text()[-3000:]
    assert images()[f"vm-{FULL}-disk-0"]["parent"]["image"] == f"base-{TEMPLATE}-disk-0"
    managed = {r["sid"]: r for r in api().cluster.ha.resources.get()}
    assert managed[f"vm:{FULL}"]["state"] == "started", managed
    assert api().nodes("pve-node1").qemu(FULL).status.current.get()["status"] == "running"
    marker_intact(FULL)
    assert planned_changes(vmb) == set(), vmb.text()[-3000:]


def wait_task(upid: str) -> dict[str, Any]:
    node = upid.split(":")[1]
    status = api().nodes(node).tasks(upid).status.get()
    while status["status"] != "stopped":
        time.sleep(0.2)
        status = api().nodes(node).tasks(upid).status.get()
    return dict(status)


def destroy_leaves_the_base_image_a_hand_made_clone_uses(vmb: LabStack) -> None:
    """An operator cloned the stack's template by hand (a linked clone: an RBD clone of its base
    image). `pulumi destroy` removes the stack's clones, then the template: PVE's destroy_vm warns
    `Could not remove disk '<volid>', check manually: base volume ... is still in use by linked
    cloned` (PVE::Storage vdisk_free) and ends `WARNINGS: 1`; the VM is gone, its base image stays
    for the clone, which keeps the template's bytes. Nothing else of the stack remains."""
    assert wait_task(api().nodes("pve-node1").qemu(TEMPLATE).clone.post(newid=BY_HAND, name="byhand"))["exitstatus"] == "OK"
    t0 = time.time()
    result = vmb.destroy()
    assert result.summary.result == "succeeded"
    destroys = [t for t in Control().tasks(TEMPLATE) if t.get("type") == "qmdestroy" and t.get("starttime", 0) >= int(t0)]
    assert destroys and destroys[-1]["exitstatus"] == "WARNINGS: 1", destroys
    warning = f"WARN: Could not remove disk '{STORAGE}:base-{TEMPLATE}-disk-0', check manually: base volume 'base-{TEMPLATE}-disk-0' is still in use"
    assert any(line.startswith(warning) for line in "\n".join(destroys[-1]["log"]).splitlines()), destroys[-1]["log"]
    assert set(images()) == {f"base-{TEMPLATE}-disk-0", f"base-{TEMPLATE}-disk-0@__base__", f"vm-{BY_HAND}-disk-0"}, images()
    marker_intact(BY_HAND)
    assert {vm["vmid"] for vm in api().cluster.resources.get(type="vm")} & {TEMPLATE, WEB, FULL, STATIC} == set()


def test_a_template_its_clones_and_changes_to_a_running_ha_vm(vmb: LabStack, tmp_path: Path) -> None:
    from lab.testing.steps import run_steps

    run_steps(
        [
            up_makes_the_template_and_three_clones,
            the_disks_are_the_templates_bytes,
            each_cloud_init_drive_holds_its_user_key_and_address,
            the_vm_is_as_configured,
            a_preview_after_the_up_plans_nothing_and_verify_passes,
            a_disk_grows_online_and_a_nic_is_hot_plugged,
            memory_restarts_the_vm_through_ha,
            data_losing_changes_are_refused_before_any_change,
            a_replacement_needs_the_flag_and_shows_as_one,
            destroy_leaves_the_base_image_a_hand_made_clone_uses,
        ],
        vmb=vmb,
        tmp_path=tmp_path,
    )
