"""Each policy of the pack, called as the engine calls it: good stacks pass, each bad case is refused by name."""

from __future__ import annotations

from typing import Any

import pytest
from pulumi_policy import EnforcementLevel
from pveceph_policy import pack
from pveceph_policy.pack import (
    CEPH_IDENTITY,
    CEPHX_CAPS,
    DISK_SETTINGS,
    HA_CPU_TYPE,
    HA_DISKS_ON_RBD,
    HA_MAX_RESTART,
    PVE_TOKEN,
    RBD_CONTENT,
    VMS_HA_MANAGED,
)

from tests.policy.stacks import DYNAMIC, UNKNOWN_STRING, client, cpu, disk, good_stack, ha, storage, violated, violations, vm


def test_the_runbooks_deployment_passes_every_policy() -> None:
    assert violations(good_stack()) == []


def test_each_policy_has_a_unique_name_a_description_and_the_issues_enforcement_level() -> None:
    levels = {policy.name: policy.enforcement_level for policy in pack.POLICIES}
    assert levels == {
        HA_DISKS_ON_RBD: EnforcementLevel.MANDATORY,
        DISK_SETTINGS: EnforcementLevel.ADVISORY,
        HA_CPU_TYPE: EnforcementLevel.MANDATORY,
        VMS_HA_MANAGED: EnforcementLevel.ADVISORY,
        CEPHX_CAPS: EnforcementLevel.MANDATORY,
        HA_MAX_RESTART: EnforcementLevel.MANDATORY,
        RBD_CONTENT: EnforcementLevel.MANDATORY,
        PVE_TOKEN: EnforcementLevel.ADVISORY,
        CEPH_IDENTITY: EnforcementLevel.ADVISORY,
    }
    assert len(pack.POLICIES) == len(levels)
    assert all(len(policy.description) > 30 for policy in pack.POLICIES)


# -- HA-managed VM disks only on the shared RBD storage ---------------------------------------


def test_ha_vm_with_its_disk_on_local_storage_is_refused() -> None:
    stack = [storage(), client(), vm(101, disks=[disk(datastoreId="local-lvm")]), ha(101)]
    (reported,) = violations(stack)
    assert reported.policy == HA_DISKS_ON_RBD
    assert reported.urn == stack[2].urn
    assert "vm:101 (vm101) is HA-managed but its disk scsi0 is on local-lvm, not on the shared Ceph RBD storage (ceph-rbd)" in reported.message


def test_ha_vm_disk_without_a_datastore_gets_the_providers_local_lvm_and_is_refused() -> None:
    plain_disk = disk()
    del plain_disk["datastoreId"]
    assert violated([storage(), client(), vm(101, disks=[plain_disk]), ha(101)]) == {HA_DISKS_ON_RBD}


def test_ha_vm_efi_disk_off_the_rbd_storage_is_refused() -> None:
    assert violated([storage(), client(), vm(101, efiDisk={"datastoreId": "local-zfs"}), ha(101)]) == {HA_DISKS_ON_RBD}


def test_ha_vm_disk_on_rbd_is_refused_when_the_stack_has_no_rbd_storage() -> None:
    reported = violations([client(), vm(101), ha(101)])
    assert [r.policy for r in reported] == [HA_DISKS_ON_RBD]
    assert "none in this stack" in reported[0].message


def test_a_vm_that_is_not_ha_managed_may_keep_its_disk_on_local_storage() -> None:
    stack = [storage(), client(), vm(101), ha(101), vm(150, "scratch", tags=["no-ha"], disks=[disk(datastoreId="local-lvm")])]
    assert violations(stack) == []


def test_rbd_storage_is_recognised_by_its_inputs_under_the_generic_dynamic_type() -> None:
    assert violations([storage(DYNAMIC), client(), vm(101), ha(101)]) == []


def test_a_generic_dynamic_resource_without_the_storage_inputs_is_not_an_rbd_storage() -> None:
    other = storage(DYNAMIC)
    del other.props["monhost"]
    assert violated([other, client(), vm(101), ha(101)]) == {HA_DISKS_ON_RBD}


def test_a_datastore_unknown_during_preview_is_not_judged_but_the_known_ones_are() -> None:
    stack = [storage(), client(), vm(101, disks=[disk(datastoreId=UNKNOWN_STRING)]), ha(101), vm(102, "vm102", disks=[disk(datastoreId="local-lvm")]), ha(102)]
    reported = violations(stack)
    assert [(r.policy, r.urn) for r in reported] == [(HA_DISKS_ON_RBD, stack[4].urn)]


# -- VirtIO SCSI, cache writeback, discard on (advisory) ---------------------------------------


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"scsiHardware": "lsi"}, "SCSI controller is lsi, not VirtIO SCSI"),
        ({"disks": [disk(cache="none")]}, "disk scsi0 has cache none, not writeback"),
        ({"disks": [disk(discard="ignore")]}, "disk scsi0 has discard ignore, not on"),
        ({"disks": [disk(interface="virtio0")]}, "disk virtio0 is not on the VirtIO SCSI bus"),
        ({"disks": [{k: v for k, v in disk().items() if k != "cache"}]}, "has cache none, not writeback"),
    ],
)
def test_vm_disk_off_the_runbooks_settings_is_reported(change: dict[str, Any], words: str) -> None:
    reported = violations([storage(), client(), vm(101, **change), ha(101)])
    assert [r.policy for r in reported] == [DISK_SETTINGS]
    assert words in reported[0].message


def test_virtio_scsi_single_is_virtio_scsi_too() -> None:
    assert violations([storage(), client(), vm(101, scsiHardware="virtio-scsi-single"), ha(101)]) == []


def test_a_cache_mode_unknown_during_preview_is_not_judged() -> None:
    assert violations([storage(), client(), vm(101, disks=[disk(cache=UNKNOWN_STRING)]), ha(101)]) == []


# -- one CPU type on every HA VM, never host ---------------------------------------------------


def test_ha_vm_with_cpu_type_host_is_refused() -> None:
    stack = [storage(), client(), vm(101, cpu=cpu("host")), ha(101)]
    (reported,) = violations(stack)
    assert (reported.policy, reported.urn) == (HA_CPU_TYPE, stack[2].urn)
    assert "vm:101 (vm101) is HA-managed with CPU type host" in reported.message


def test_ha_vm_with_another_cpu_type_than_the_others_is_refused() -> None:
    odd = vm(103, "vm103", cpu=cpu("kvm64"))
    stack = [*good_stack(), odd, ha(103)]
    (reported,) = violations(stack)
    assert (reported.policy, reported.urn) == (HA_CPU_TYPE, odd.urn)
    assert "vm:103 (vm103) has CPU type kvm64 while the other HA VMs use x86-64-v2-AES" in reported.message


def test_ha_vm_without_a_cpu_type_gets_the_providers_qemu64_and_is_refused_next_to_others() -> None:
    assert violated([*good_stack(), vm(103, "vm103", cpu={"cores": 2}), ha(103)]) == {HA_CPU_TYPE}


def test_a_vm_outside_ha_may_use_cpu_type_host() -> None:
    assert violations([*good_stack(), vm(150, "build", tags=["no-ha"], cpu=cpu("host"))]) == []


# -- every VM HA-managed unless tagged no-ha (advisory) ----------------------------------------


def test_vm_without_an_ha_resource_is_reported() -> None:
    lone = vm(150, "vm150")
    reported = violations([*good_stack(), lone])
    assert [(r.policy, r.urn) for r in reported] == [(VMS_HA_MANAGED, lone.urn)]
    assert "vm:150 (vm150) is not HA-managed: there is no HA resource vm:150 in this stack" in reported[0].message


def test_vm_tagged_no_ha_is_deliberately_outside_ha() -> None:
    assert violations([*good_stack(), vm(150, "vm150", tags=["backup", "no-ha"])]) == []


# -- cephx caps with the blocklist permission ----------------------------------------------------


def test_runbook_caps_without_profile_rbd_are_refused() -> None:
    stack = [storage(), client(mon="allow r", osd="allow rwx pool=rbd-pool"), vm(101), ha(101)]
    (reported,) = violations(stack)
    assert (reported.policy, reported.urn) == (CEPHX_CAPS, stack[1].urn)
    assert "client.proxmox has mon caps 'allow r', without the blocklist permission of 'profile rbd'" in reported.message


def test_ceph_client_is_recognised_by_its_inputs_under_the_generic_dynamic_type() -> None:
    assert violated([storage(), client(DYNAMIC, mon="allow r"), vm(101), ha(101)]) == {CEPHX_CAPS}


def test_profile_rbd_among_other_mon_grants_is_enough() -> None:
    assert violations([storage(), client(mon="allow r, profile  rbd"), vm(101), ha(101)]) == []


# -- max restart at least 1 ----------------------------------------------------------------------


def test_ha_resource_with_max_restart_0_is_refused() -> None:
    reported = violations([storage(), client(), vm(101), ha(101, maxRestart=0)])
    assert [r.policy for r in reported] == [HA_MAX_RESTART]
    assert "vm:101: max restart is 0" in reported[0].message


def test_ha_resource_without_max_restart_gets_pves_default_1() -> None:
    resource = ha(101)
    del resource.props["maxRestart"]
    assert violations([storage(), client(), vm(101), resource]) == []


# -- the RBD storage's content includes images ---------------------------------------------------


def test_rbd_storage_without_images_content_is_refused() -> None:
    reported = violations([storage(content="rootdir"), client(), vm(101), ha(101)])
    assert [r.policy for r in reported] == [RBD_CONTENT]
    assert "storage ceph-rbd has content 'rootdir' without images (Disk image)" in reported[0].message


def test_rbd_storage_with_images_and_rootdir_passes() -> None:
    assert violations([storage(content="images,rootdir"), client(), vm(101), ha(101)]) == []
