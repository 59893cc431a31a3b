"""The whole program under mocks: the runbook's order, the runbook's values, and secrets kept secret."""

from __future__ import annotations

import dataclasses
from typing import Any

import pulumi
import pytest

from components import config as cfg
from components.stack import PveCephHa
from tests.unit.helpers import CEPHX_KEY, TOKEN, RecordingMonitor, Registration, WorldMocks, deploy, lab_credentials, valid_raw

DYNAMIC = "pulumi-python:dynamic/pveceph"


@pytest.fixture(scope="module")
def lab() -> tuple[RecordingMonitor, dict]:
    return deploy(valid_raw())


def depends(monitor: RecordingMonitor, name: str, on: str) -> bool:
    """``name`` waits for ``on``: directly or through a property. Not through its parent component:
    the engine orders a resource by its own dependencies only (components.graph.child_options)."""
    reg = monitor.by_name(name)
    seen = set(reg.dependencies) | {u for urns in reg.property_dependencies.values() for u in urns}
    return any(urn.endswith(f"::{on}") for urn in seen)


def ssh_backed(monitor: RecordingMonitor) -> list[Registration]:
    """Every resource that reaches a host over SSH (the Ceph admin node or the PVE nodes)."""
    return [r for r in monitor.registrations if r.plain("connection") or r.plain("connections")]


def connections(reg: Registration) -> list[dict[str, Any]]:
    return [reg.plain("connection")] if reg.plain("connection") else list(reg.plain("connections").values())


def test_pool_waits_for_the_health_gate(lab: tuple) -> None:
    monitor, _ = lab
    assert depends(monitor, "unit-rbd-pool", "unit-health-check")


def test_client_caps_follow_the_pool(lab: tuple) -> None:
    monitor, _ = lab
    reg = monitor.by_name("unit-cephx-client")
    assert any(u.endswith("::unit-rbd-pool") for u in reg.property_dependencies["caps"])
    assert reg.plain("caps") == {"mon": "profile rbd", "osd": "profile rbd pool=rbd-pool"}


def test_storage_waits_for_key_and_ceph_common_on_every_node(lab: tuple) -> None:
    monitor, _ = lab
    for node in ("pve-node1", "pve-node2", "pve-node3"):
        assert depends(monitor, "unit-storage-storage", f"unit-ceph-common-{node}-package"), node
    inner = monitor.by_name("unit-storage-storage")
    assert any(u.endswith("::unit-cephx-client") for u in inner.property_dependencies["key"])


def test_storage_is_the_runbooks_rbd_storage(lab: tuple) -> None:
    monitor, _ = lab
    reg = monitor.by_name("unit-storage-storage")
    assert reg.plain("storageId") == "ceph-rbd"
    assert reg.plain("pool") == "rbd-pool"
    assert reg.plain("monhost") == "127.10.10.101 127.10.10.102 127.10.10.103"
    assert reg.plain("username") == "proxmox"
    assert reg.plain("content") == "images"
    assert reg.plain("nodes") == ["pve-node1", "pve-node2", "pve-node3"]


def test_vm_disk_is_on_ceph_rbd_with_the_runbooks_options(lab: tuple) -> None:
    monitor, _ = lab
    vm = monitor.by_name("unit-vm101-vm")
    assert any(u.endswith("::unit-storage-storage") for u in vm.property_dependencies["disks"])
    (disk,) = vm.plain("disks")
    assert disk["datastoreId"] == "ceph-rbd"
    assert (disk["interface"], disk["cache"], disk["discard"]) == ("scsi0", "writeback", "on")
    assert vm.plain("scsiHardware") == "virtio-scsi-pci"
    assert vm.plain("networkDevices")[0]["model"] == "virtio"
    assert vm.plain("cdrom")["fileId"] == "local:iso/debian-12.iso"
    assert vm.plain("cpu")["type"] == "x86-64-v2-AES"
    assert (vm.plain("nodeName"), vm.plain("vmId")) == ("pve-node1", 101)


def test_ha_vm_never_fights_the_ha_manager(lab: tuple) -> None:
    monitor, _ = lab
    assert {"nodeName", "started"} <= set(monitor.by_name("unit-vm101-vm").ignore_changes)


def test_ha_resource_after_vm_and_preflight(lab: tuple) -> None:
    monitor, _ = lab
    ha = monitor.by_name("unit-vm101-ha")
    assert any(u.endswith("::unit-vm101-vm") for u in ha.dependencies)
    assert depends(monitor, "unit-vm101-ha", "unit-ha-preflight-check")
    assert ha.plain("resourceId") == "vm:101"
    assert (ha.plain("maxRestart"), ha.plain("maxRelocate"), ha.plain("state")) == (1, 1, "started")


def test_ceph_common_is_one_resource_per_node_in_parallel(lab: tuple) -> None:
    monitor, _ = lab
    packages = monitor.of_type(f"{DYNAMIC}:CephCommonPackage")
    assert len(packages) == 3
    assert all([u.rsplit("::", 1)[1] for u in r.dependencies] == ["unit-owners-check"] for r in packages)
    assert {(r.plain("node"), r.plain("connection")["host"]) for r in packages} == {
        ("pve-node1", "127.10.20.11"),
        ("pve-node2", "127.10.20.12"),
        ("pve-node3", "127.10.20.13"),
    }
    assert all(r.plain("package") == "ceph-common" for r in packages)


def test_the_ha_preflight_is_one_resource_with_a_connection_per_node(lab: tuple) -> None:
    monitor, _ = lab
    (preflight,) = monitor.of_type(f"{DYNAMIC}:HaPreflight")
    assert preflight.plain("nodes") == ["pve-node1", "pve-node2", "pve-node3"]
    assert {n: c["host"] for n, c in preflight.plain("connections").items()} == {
        "pve-node1": "127.10.20.11",
        "pve-node2": "127.10.20.12",
        "pve-node3": "127.10.20.13",
    }
    assert preflight.plain("mode") == "rules"


def test_nothing_changes_before_the_vm_owners_check(lab: tuple) -> None:
    monitor, _ = lab
    (owners,) = monitor.of_type(f"{DYNAMIC}:Owners")
    assert [(o["kind"], o["name"]) for o in owners.plain("objects")] == [("vm", "101"), ("haresource", "vm:101")]
    assert owners.plain("owner") == "pulumi-stack.pve-ceph-ha.unit"
    for first in ("unit-health-check", "unit-ha-preflight-check", "unit-ceph-common-pve-node1"):
        assert depends(monitor, first, "unit-owners-check"), first


def test_every_vm_carries_the_stacks_owner_tag_from_its_create(lab: tuple) -> None:
    monitor, _ = lab
    assert monitor.by_name("unit-vm101-vm").plain("tags") == ["pulumi-stack.pve-ceph-ha.unit"]


def test_the_scrub_window_is_set_after_the_gate(lab: tuple) -> None:
    monitor, _ = lab
    window = monitor.by_name("unit-scrub-window")
    assert (window.plain("beginHour"), window.plain("endHour")) == (22, 6)
    assert depends(monitor, "unit-scrub-window", "unit-health-check")


def test_ssh_host_keys_are_pinned(lab: tuple) -> None:
    monitor, _ = lab
    for reg in ssh_backed(monitor):
        for connection in connections(reg):
            name = f"[{connection['host']}]:{int(connection['port'])}"
            assert any(line.startswith(f"{name} ssh-ed25519 ") for line in connection["knownHosts"].splitlines()), reg.name


def test_an_ssh_address_without_a_host_key_stops_the_program_naming_the_key() -> None:
    config = cfg.validate(valid_raw())
    credentials = lab_credentials(config)
    missing = {k: v for k, v in credentials.known_hosts.items() if not k.startswith("[127.10.20.12]")}
    pulumi.runtime.set_mocks(WorldMocks(), project="pve-ceph-ha", stack="keys", preview=False)
    with pytest.raises(pulumi.RunError) as info:
        PveCephHa("keys", config, dataclasses.replace(credentials, known_hosts=missing))
    assert str(info.value) == (
        "config error: pve-ceph-ha:proxmox.nodes[1].address = 127.10.20.12:2222: has no host key in ssh.knownHostsFile; "
        "check the host, then add it: ssh-keyscan -p 2222 127.10.20.12 >> <knownHostsFile>"
    )


def test_nothing_is_a_pulumi_command_resource(lab: tuple) -> None:
    monitor, _ = lab
    assert not [r.name for r in monitor.registrations if r.type.startswith("command:")]


def test_secrets_stay_secret(lab: tuple) -> None:
    monitor, _ = lab
    assert "apiToken" in monitor.by_name("unit-pve").secret_paths()
    for reg in ssh_backed(monitor):
        key = "connections" if reg.plain("connections") else "connection"
        assert key in reg.secret_paths() and key in reg.additional_secret_outputs, reg.name
    storage = monitor.by_name("unit-storage-storage")
    assert {"api", "key"} <= storage.secret_paths()
    assert {"api", "key"} <= set(storage.additional_secret_outputs)
    assert "key" in monitor.by_name("unit-cephx-client").additional_secret_outputs


def test_no_secret_travels_in_plain_text(lab: tuple) -> None:
    monitor, _ = lab
    for reg in monitor.registrations:
        for key, value in reg.raw.items():
            if key in reg.secret_paths():
                continue
            text = str(value)
            assert TOKEN not in text and "PRIVATE KEY" not in text and CEPHX_KEY not in text, (reg.name, key)


def test_outputs_for_other_stacks(lab: tuple) -> None:
    _, outputs = lab
    assert outputs["storageId"] == "ceph-rbd"
    assert outputs["pool"] == "rbd-pool"
    assert outputs["clientName"] == "proxmox"
    assert outputs["clientKey"] == CEPHX_KEY
    assert outputs["vms"] == [{"id": 101, "name": "vm101", "initialNode": "pve-node1", "haSid": "vm:101", "images": ["rbd-pool/vm-101-disk-0"]}]


def test_the_disk_images_are_read_once_every_vm_exists(lab: tuple) -> None:
    monitor, _ = lab
    (images,) = monitor.of_type("pulumi-python:dynamic/pveceph:VmImages")
    vms = {monitor.urn(r.name) for r in monitor.of_type("proxmoxve:index/vmLegacy:VmLegacy")}
    assert vms and vms <= set(images.dependencies)
    assert images.plain("vmIds") == [101]


def test_every_child_is_parented_to_its_component(lab: tuple) -> None:
    monitor, _ = lab
    for reg in monitor.registrations:
        if reg.name != "unit":
            assert reg.parent, reg.name


def test_rules_mode_adds_a_node_affinity_rule_after_the_ha_resource() -> None:
    raw = valid_raw()
    raw["vms"][0]["affinity"] = "prefer-node1"
    monitor, _ = deploy(raw, stack="rules")
    rule = monitor.by_name("rules-rule-prefer-node1")
    assert rule.plain("type") == "node-affinity"
    assert rule.plain("resources") == ["vm:101"]
    assert rule.plain("nodes") == {"pve-node1": 2, "pve-node2": 1}
    assert any(u.endswith("::rules-vm101-ha") for u in rule.dependencies)


def test_resource_affinity_is_an_ha_rule_after_its_vms_ha_resources() -> None:
    """Issue #26: ha.resourceAffinities as HA rules of type resource-affinity (bpg's proxmoxve_harule
    `affinity`), made once every member's HA resource exists, and declared to the owner check."""
    raw = valid_raw()
    raw["vms"] = [{"id": 200 + i, "name": f"db{i}", "node": f"pve-node{i}"} for i in (1, 2, 3)]
    raw["ha"]["resourceAffinities"] = [
        {"name": "db-apart", "vms": ["db1", "db2"], "keep": "apart"},
        {"name": "db-near", "vms": ["db3", "db2"], "keep": "together"},
    ]
    monitor, _ = deploy(raw, stack="aff")
    apart = monitor.by_name("aff-affinity-db-apart")
    assert (apart.plain("type"), apart.plain("affinity"), apart.plain("resources")) == ("resource-affinity", "negative", ["vm:201", "vm:202"])
    assert apart.plain("nodes") is None and apart.plain("strict") is None
    near = monitor.by_name("aff-affinity-db-near")
    assert (near.plain("affinity"), near.plain("resources")) == ("positive", ["vm:202", "vm:203"])
    assert depends(monitor, "aff-affinity-db-apart", "aff-db1-ha") and depends(monitor, "aff-affinity-db-apart", "aff-db2-ha")
    from components.stack import declared_objects

    declared = declared_objects(cfg.validate(raw))
    assert {"kind": "harule", "name": "db-apart", "entry": "ha.resourceAffinities[0].name"} in declared


def test_rules_mode_sends_failback_off_on_the_ha_resource() -> None:
    """PVE 9 keeps failback on the resource: an affinity with failback: false turns it off there;
    with failback on (the default) nothing is sent, so PVE's default holds."""
    raw = valid_raw()
    raw["vms"][0]["affinity"] = "prefer-node1"
    raw["ha"]["affinities"][0]["failback"] = False
    monitor, _ = deploy(raw, stack="nofb")
    assert monitor.by_name("nofb-vm101-ha").plain("failback") is False
    raw["ha"]["affinities"][0]["failback"] = True
    monitor, _ = deploy(raw, stack="fb")
    assert monitor.by_name("fb-vm101-ha").plain("failback") is None


def test_groups_mode_adds_an_ha_group_before_the_resource() -> None:
    raw = valid_raw()
    raw["ha"]["mode"] = "groups"
    raw["vms"][0]["affinity"] = "prefer-node1"
    monitor, _ = deploy(raw, stack="groups")
    group = monitor.by_name("groups-group-prefer-node1")
    assert group.plain("group") == "prefer-node1"
    ha = monitor.by_name("groups-vm101-ha")
    assert ha.plain("group") == "prefer-node1"
    assert depends(monitor, "groups-vm101-ha", "groups-group-prefer-node1")
    assert not monitor.of_type("proxmoxve:index/harule:Harule")


def test_non_ha_vm_has_no_ha_resource_and_keeps_its_node() -> None:
    raw = valid_raw()
    raw["vms"][0]["ha"] = False
    monitor, outputs = deploy(raw, stack="plain")
    assert not monitor.of_type("proxmoxve:index/haresource:Haresource")
    assert not {"nodeName", "started"} & set(monitor.by_name("plain-vm101-vm").ignore_changes)
    assert outputs["vms"][0]["haSid"] is None


def test_one_vm_per_node_in_parallel() -> None:
    raw = valid_raw()
    raw["vms"] = [{"id": 100 + i, "name": f"vm{100 + i}", "node": f"pve-node{i}"} for i in (1, 2, 3)]
    monitor, _ = deploy(raw, stack="three")
    vms = monitor.of_type("proxmoxve:index/vmLegacy:VmLegacy")
    assert len(vms) == 3
    for vm in vms:
        assert not any("vm10" in u for u in vm.dependencies), vm.name


def test_runbook_caps_are_the_runbooks_words() -> None:
    raw = valid_raw()
    raw["ceph"]["client"]["caps"] = "runbook"
    monitor, _ = deploy(raw, stack="caps")
    assert monitor.by_name("caps-cephx-client").plain("caps") == {"mon": "allow r", "osd": "allow rwx pool=rbd-pool"}


def test_health_gate_is_told_the_pool_it_must_make_room_for(lab: tuple) -> None:
    monitor, _ = lab
    gate = monitor.by_name("unit-health-check")
    assert (gate.plain("pool"), gate.plain("pgNum"), gate.plain("size")) == ("rbd-pool", 32, 3)
    assert gate.plain("monitors") == ["127.10.10.101", "127.10.10.102", "127.10.10.103"]
    assert gate.plain("connection")["host"] == "127.10.10.101"


def test_the_health_report_is_an_output(lab: tuple) -> None:
    _, outputs = lab
    assert outputs["healthReport"] == "health: HEALTH_OK"
