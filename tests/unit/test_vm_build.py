"""VMs as operators build them (issue #25), without the engine: the config's rules between keys,
the MACs, what a change does to a running VM, the clone's template against the cluster, the rights."""

from __future__ import annotations

from typing import Any

import pytest

from components import config as cfg
from components import pve_rights, vm_changes
from components.config_vm import NicSpec
from components.ha_vm import mac_address
from components.owners import template_problems
from tests.unit.helpers import valid_raw

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@host"


def clone_raw(**vm: Any) -> dict[str, Any]:
    raw = valid_raw()
    raw["templates"] = [{"id": 9000, "name": "golden", "node": "pve-node1", "image": "local:import/lab-cloud.qcow2", "diskGb": 1}]
    raw["vms"] = [
        {
            "id": 101,
            "name": "vm101",
            "node": "pve-node1",
            "clone": {"template": 9000},
            "cloudInit": {"user": "ops", "sshKeys": [KEY], "ip": "192.0.2.10/24", "gateway": "192.0.2.1", "dns": ["192.0.2.53"]},
            "disks": [{"sizeGb": 2}, {"sizeGb": 4, "cache": "none"}],
            "nics": [{"bridge": "vmbr0"}, {"bridge": "vmbr0", "vlan": 20}],
            **vm,
        }
    ]
    return raw


def refused(raw: dict[str, Any]) -> str:
    with pytest.raises(cfg.ConfigError) as info:
        cfg.validate(raw)
    return str(info.value)


def test_a_clone_with_cloud_init_disks_and_nics_is_valid() -> None:
    config = cfg.validate(clone_raw())
    vm = config.vms[0]
    assert [d.size_gb for d in vm.disk_list()] == [2, 4]
    assert [(n.bridge, n.vlan) for n in vm.nic_list()] == [("vmbr0", None), ("vmbr0", 20)]
    assert vm.clone is not None and vm.clone.template == 9000 and not vm.clone.full
    assert config.templates[0].disk_gb == 1


@pytest.mark.parametrize(
    ("vm", "line"),
    [
        ({"diskGb": 40}, "vms[0].diskGb = 40: is set with vms[0].disks"),
        ({"bridge": "vmbr1"}, "vms[0].bridge = vmbr1: is set with vms[0].nics"),
        ({"iso": "local:iso/debian-12.iso"}, "vms[0].iso = local:iso/debian-12.iso: is set with vms[0].clone"),
        ({"nics": [{"mac": "BC:24:11:00:00:01"}, {"mac": "BC:24:11:00:00:01"}]}, "vms[0].nics[1].mac = BC:24:11:00:00:01: MAC addresses must be unique"),
        ({"cloudInit": {"ip": "dhcp", "gateway": "192.0.2.1"}}, "gateway is set with ip dhcp"),
        ({"tags": ["no-ha"]}, "vms[0].tags[0] = no-ha: is a marker the program sets itself"),
        ({"nics": [{"vlan": 4095}]}, "vms[0].nics[0].vlan = 4095: must be <= 4094"),
    ],
)
def test_each_part_of_a_vm_is_made_one_way(vm: dict[str, Any], line: str) -> None:
    assert line in refused(clone_raw(**vm))


def test_a_template_id_apart_from_the_vms_and_on_a_known_node() -> None:
    raw = clone_raw()
    raw["templates"].append({"id": 101, "name": "other", "node": "pve-node9", "image": "local:import/a.raw"})
    shown = refused(raw)
    assert "templates[1].id = 101: template ids must be unique and apart from the VMs' ids" in shown
    assert "templates[1].node = pve-node9: must be one of proxmox.nodes" in shown


def test_an_ssh_key_is_checked_without_echoing_more_than_its_type() -> None:
    raw = clone_raw(cloudInit={"sshKeys": ["ssh-ed25519 c2VjcmV0"]})
    assert "vms[0].cloudInit.sshKeys[0]" in refused(raw)


def test_macs_are_stable_per_vm_and_position_and_the_configured_one_wins() -> None:
    first = mac_address(101, 1, NicSpec())
    assert first == mac_address(101, 1, NicSpec(vlan=30))  # a VLAN change keeps the MAC
    assert first.startswith("BC:24:11:") and len(first) == 17
    assert first != mac_address(101, 0, NicSpec()) != mac_address(102, 0, NicSpec())
    assert mac_address(101, 1, NicSpec(mac="BC:24:11:AA:BB:CC")) == "BC:24:11:AA:BB:CC"


def build(**change: Any) -> dict[str, Any]:
    vm = cfg.validate(clone_raw(**change)).vms[0]
    return vm_changes.build_of(0, vm, runs=True)


def test_a_shrunk_disk_a_dropped_disk_and_a_new_template_are_refused() -> None:
    old = [build()]
    shrunk = vm_changes.refusals(old, [build(disks=[{"sizeGb": 1}, {"sizeGb": 4}])])
    assert shrunk == ["vms[0].disks[0].sizeGb = 1: scsi0 of vms[0] (vm101) is 2 GiB and a disk cannot shrink (PVE resizes only up); set 2 or more"]
    dropped = vm_changes.refusals(old, [build(disks=[{"sizeGb": 2}])])
    assert dropped and "scsi1 of vms[0] (vm101) would be deleted with its data" in dropped[0]
    retemplated = vm_changes.refusals(old, [build(clone={"template": 9000, "full": True})])
    assert retemplated and "vms[0].clone = a full clone of 9000: vms[0] (vm101) was made as a linked clone of 9000" in retemplated[0]
    assert "allowReplace: true" in retemplated[0]
    assert vm_changes.refusals(old, [build(clone={"template": 9000, "full": True}, allowReplace=True)]) == []
    # the engine hands the old numbers back as floats
    floats = [{**old[0], "disks": [2.0, 4.0], "template": 9000.0, "id": 101.0}]
    assert vm_changes.refusals(floats, [build()]) == []


def test_what_each_change_does_to_a_running_vm_is_said() -> None:
    old = [build()]
    lines = vm_changes.effects(old, [build(memoryMb=4096)])
    assert lines == [
        "vms[0] (vm101): memory 2048 MiB → 4096 MiB; the VM restarts: shut down and started again through the HA manager, "
        "and ends started (PVE hot-plugs neither cores nor memory by default)"
    ]
    grown = vm_changes.effects(old, [build(disks=[{"sizeGb": 2}, {"sizeGb": 8}], nics=[{}, {"vlan": 30}, {"vlan": 40}])])
    assert grown == [
        "vms[0] (vm101): scsi1 grown online 4 → 8 GiB (rbd resize, no restart), net1 moved to vmbr0 (VLAN 30) on the running VM, "
        "net2 on vmbr0 (VLAN 40) hot-plugged; no restart"
    ]
    assert vm_changes.effects(old, [build()]) == []
    as_floats = [{**old[0], "memoryMb": 2048.0}]  # the engine hands both sides' numbers back as floats
    assert vm_changes.effects(as_floats, [{**build(memoryMb=4096), "memoryMb": 4096.0}])[0].startswith("vms[0] (vm101): memory 2048 MiB → 4096 MiB;")
    assert vm_changes.effects(None, [build(memoryMb=4096)]) == []  # a new VM: nothing to say


def test_a_clones_template_is_found_in_the_cluster() -> None:
    vms = [
        {"vmid": 9000, "name": "golden", "node": "pve-node2", "template": 1},
        {"vmid": 9001, "name": "web", "node": "pve-node1", "template": 0},
    ]
    clone = {"key": "vms[0].clone", "node": None, "vmNode": "pve-node1"}
    assert "the cluster has no VM 8999" in template_problems([{**clone, "template": 8999}], vms)[0]
    assert "VM 9001 'web' on pve-node1 is not a template" in template_problems([{**clone, "template": 9001}], vms)[0]
    assert "set vms[0].clone.node: pve-node2" in template_problems([{**clone, "template": 9000}], vms)[0]
    assert template_problems([{**clone, "template": 9000, "node": "pve-node2"}], vms) == []
    ours = [{**vms[0], "tags": "pulumi-stack.p.s;no-ha"}]
    dropped = template_problems([{**clone, "template": 9000, "node": "pve-node2"}], ours, "pulumi-stack.p.s")
    assert dropped and "is this stack's and is no longer in templates" in dropped[0]


def test_the_rights_of_a_clone_with_cloud_init_in_a_pool() -> None:
    raw = clone_raw(pvePool="prod")
    raw["templates"] = []
    vms = pve_rights.for_config(cfg.validate(raw))
    needs = {(n.privilege, n.path) for n in pve_rights.needed("ceph-rbd", vms)}
    assert {("VM.Clone", "/vms/9000"), ("VM.Config.Cloudinit", "/vms/101"), ("Pool.Audit", "/pool/prod")} <= needs
    assert ("VM.Clone", "/vms/101") not in needs  # only on the template
    commands = pve_rights.setup_commands("pulumi@pve!stack", "ceph-rbd", vms)
    assert "pveum acl modify /vms/9000 --users pulumi@pve --tokens 'pulumi@pve!stack' --roles PVETemplateUser --propagate 0" in commands
    assert "pveum acl modify /pool/prod --users pulumi@pve --tokens 'pulumi@pve!stack' --roles PVEPoolUser --propagate 0" in commands
    assert pve_rights.VmRights.from_input(vms[0].as_input()) == vms[0]


def test_a_vm_without_nics_keeps_the_mac_pve_gave_it() -> None:
    import pulumi

    from components.ha_vm import network_devices

    legacy = cfg.validate(valid_raw()).vms[0]
    assert pulumi.get(network_devices(legacy)[0], "mac_address") is None  # an upgrade never changes a running guest's MAC
    cloned = cfg.validate(clone_raw()).vms[0]
    assert [pulumi.get(nic, "mac_address") for nic in network_devices(cloned)] == [mac_address(101, i, NicSpec()) for i in range(2)]


def test_the_builds_as_the_engine_hands_them_back_without_their_nones() -> None:
    """The engine drops a None from a dynamic resource's inputs: an ISO VM's build has no template key."""
    old = vm_changes.build_of(0, cfg.validate(valid_raw()).vms[0], runs=True)
    engine = [{k: v for k, v in old.items() if v is not None}]
    assert vm_changes.refusals(engine, engine) == [] and vm_changes.effects(engine, engine) == []
    assert vm_changes.effects(engine, [{**engine[0], "memoryMb": 4096}])[0].startswith("vms[0] (vm101): memory 2048 MiB → 4096 MiB;")
