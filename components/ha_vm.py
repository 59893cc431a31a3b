"""Runbook 3 and 5: a VM with its disk on the RBD storage, registered as an HA resource.

Pulumi must never fight the HA manager: after a failover the VM runs on another node, so for an
HA-managed VM the node is its initial placement (``ignore_changes=["nodeName"]``) and its power
state belongs to HA (``ignore_changes=["started"]``). The next preview shows no change and never
plans a migration back or a re-create.
"""

from __future__ import annotations

import pulumi
import pulumi_proxmoxve as proxmoxve

from clients.pve import cluster_ha
from components.config import AffinitySpec, HaSpec, VmSpec
from components.graph import child_options
from components.owners import owned_comment

SCSI_CONTROLLER = "virtio-scsi-pci"  # runbook 3-1: Bus VirtIO SCSI
NO_HA_TAG = "no-ha"  # marks a VM deliberately left out of HA (the policy pack reads it)


# pulumi-proxmoxve#664 (open): a disk without speed limits always shows an update
# (`+ speed: {iopsRead: 0, ...}`), so a second `pulumi up` would never be a no-op. The program
# sets no speed limits; ignoring the bridged provider's phantom diff keeps the promise with the
# official plugin too. The path names the disk's index: `disks[*].speed` does not reach the
# bridged provider's diff (measured: the update stays).
DISKS = 1  # scsi0, on the RBD storage


def phantom_speed_diffs(disks: int = DISKS) -> list[str]:
    return [f"disks[{index}].speed" for index in range(disks)]


# Pulumi never fights the HA manager: an HA VM's node is its initial placement and its power
# state belongs to HA (bpg #391, #1411: a failover must not plan a migration back or a re-create).
HA_OWNED = ["nodeName", "started"]


def vm_ignore_changes(vm: VmSpec) -> list[str]:
    return [*phantom_speed_diffs(), *(HA_OWNED if vm.ha else [])]


def sid(vm: VmSpec) -> str:
    return cluster_ha.sid(vm.id)


class HaVm(pulumi.ComponentResource):
    """One VM on ``ceph-rbd`` (VirtIO SCSI, cache writeback, discard on, VirtIO net) and its HA resource."""

    vm_id: pulumi.Output[int]
    sid: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        vm: VmSpec,
        ha: HaSpec,
        storage_id: pulumi.Input[str],
        *,
        owner: str,
        create_timeout: int = 1800,
        group: pulumi.Resource | None = None,
        ha_depends_on: list[pulumi.Resource] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("pveceph:proxmox:HaVm", name, None, opts)
        child = child_options(self, opts)
        self.machine = proxmoxve.VmLegacy(
            f"{name}-vm",
            node_name=vm.node,
            vm_id=vm.id,
            name=vm.name,
            cpu=proxmoxve.VmLegacyCpuArgs(cores=vm.cores, type=vm.cpu_type),
            memory=proxmoxve.VmLegacyMemoryArgs(dedicated=vm.memory_mb),
            scsi_hardware=SCSI_CONTROLLER,
            disks=[
                proxmoxve.VmLegacyDiskArgs(
                    interface="scsi0",
                    datastore_id=storage_id,
                    size=vm.disk_gb,
                    file_format="raw",
                    cache="writeback",
                    discard="on",
                )
            ],
            network_devices=[proxmoxve.VmLegacyNetworkDeviceArgs(bridge=vm.bridge, model="virtio")],
            cdrom=proxmoxve.VmLegacyCdromArgs(file_id=vm.iso, interface="ide2") if vm.iso else None,
            operating_system=proxmoxve.VmLegacyOperatingSystemArgs(type="l26"),
            # The stack's owner tag goes in with the create call itself, so the rerun of an
            # interrupted `up` still recognises its own half-made VM (components/owners.py).
            # Sorted, as PVE keeps them (bpg sorts what it sends).
            tags=sorted(tag for tag in (owner, *([] if vm.ha else [NO_HA_TAG])) if tag),
            on_boot=True,
            started=(ha.state == "started") if vm.ha else True,
            stop_on_destroy=True,
            # bpg's client has no per-call timeout: a hung API call is bounded by the create's own
            timeout_create=create_timeout,
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(ignore_changes=vm_ignore_changes(vm))),
        )
        self.vm_id = self.machine.vm_id
        self.sid = pulumi.Output.from_input(sid(vm))
        self.resource: proxmoxve.Haresource | None = None
        if vm.ha:
            self.resource = proxmoxve.Haresource(
                f"{name}-ha",
                resource_id=sid(vm),
                type="vm",
                state=ha.state,
                max_restart=ha.max_restart,
                max_relocate=ha.max_relocate,
                group=vm.affinity if ha.mode == "groups" and vm.affinity else None,
                comment=owned_comment(owner),
                opts=pulumi.ResourceOptions.merge(
                    child,
                    pulumi.ResourceOptions(depends_on=[self.machine, *(ha_depends_on or []), *([group] if group else [])]),
                ),
            )
        self.register_outputs({"vm_id": self.vm_id, "sid": self.sid})


def ha_group(name: str, affinity: AffinitySpec, owner: str, opts: pulumi.ResourceOptions) -> proxmoxve.Hagroup:
    """PVE 8: an HA group with node priorities."""
    return proxmoxve.Hagroup(
        name,
        group=affinity.name,
        nodes=dict(affinity.nodes),
        restricted=affinity.strict,
        no_failback=not affinity.failback,
        comment=owned_comment(owner),
        opts=opts,
    )


def ha_rule(name: str, affinity: AffinitySpec, owner: str, resources: list[str], opts: pulumi.ResourceOptions) -> proxmoxve.Harule:
    """PVE 9: a node-affinity rule with node priorities over the VMs that name it."""
    return proxmoxve.Harule(
        name,
        rule=affinity.name,
        type="node-affinity",
        resources=resources,
        nodes=dict(affinity.nodes),
        strict=affinity.strict,
        comment=owned_comment(owner),
        opts=opts,
    )
