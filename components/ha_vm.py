"""Runbook 3 and 5: a VM with its disk on the RBD storage, registered as an HA resource.

Pulumi must never fight the HA manager: after a failover the VM runs on another node, so for an
HA-managed VM the node is its initial placement (``ignore_changes=["nodeName"]``) and its power
state belongs to HA (``ignore_changes=["started"]``). The next preview shows no change and never
plans a migration back or a re-create.
"""

from __future__ import annotations

import hashlib

import pulumi
import pulumi_proxmoxve as proxmoxve

from clients.pve import cluster_ha
from components.config import AffinitySpec, HaSpec, ResourceAffinitySpec, TemplateSpec, VmSpec
from components.config_vm import NO_HA_TAG, CloudInitSpec, DiskSpec, NicSpec
from components.graph import child_options
from components.owners import owned_comment

SCSI_CONTROLLER = "virtio-scsi-pci"  # runbook 3-1: Bus VirtIO SCSI
MAC_PREFIX = "BC:24:11"  # the prefix PVE gives the MACs it makes (PVE::Tools::random_ether_addr)


# pulumi-proxmoxve#664 (open): a disk without speed limits always shows an update
# (`+ speed: {iopsRead: 0, ...}`), so a second `pulumi up` would never be a no-op. The program
# sets no speed limits; ignoring the bridged provider's phantom diff keeps the promise with the
# official plugin too. The path names the disk's index: `disks[*].speed` does not reach the
# bridged provider's diff (measured: the update stays).
def phantom_speed_diffs(disks: int = 1) -> list[str]:
    return [f"disks[{index}].speed" for index in range(disks)]


# Pulumi never fights the HA manager: an HA VM's node is its initial placement and its power
# state belongs to HA (bpg #391, #1411: a failover must not plan a migration back or a re-create).
HA_OWNED = ["nodeName", "started"]


def vm_ignore_changes(vm: VmSpec) -> list[str]:
    return [*phantom_speed_diffs(len(vm.disk_list())), *(HA_OWNED if vm.ha else [])]


def sid(vm: VmSpec) -> str:
    return cluster_ha.sid(vm.id)


def mac_address(vm_id: int, index: int, nic: NicSpec) -> str:
    """NIC INDEX's MAC: the configured one, or PVE's prefix and three bytes of a hash of the VM id
    and the position. bpg sends a changed NIC without the MAC it read back, and PVE then makes a
    new one (a new MAC is a new interface to the guest: its DHCP lease and udev name change), so
    the program always sends it."""
    if nic.mac:
        return nic.mac
    digest = hashlib.sha256(f"pve-ceph-ha/{vm_id}/net{index}".encode()).digest()
    return ":".join([MAC_PREFIX, *(f"{b:02X}" for b in digest[:3])])


def network_devices(vm: VmSpec) -> list[proxmoxve.VmLegacyNetworkDeviceArgs]:
    """net0..N. A VM configured with `bridge` alone (before `nics` existed) keeps the MAC PVE gave
    it: sending a derived one would change a running guest's MAC on the first `up` after an upgrade."""
    return [
        proxmoxve.VmLegacyNetworkDeviceArgs(
            bridge=nic.bridge, model="virtio", vlan_id=nic.vlan, mac_address=mac_address(vm.id, index, nic) if vm.nics is not None else None
        )
        for index, nic in enumerate(vm.nic_list())
    ]


def rbd_disk(index: int, disk: DiskSpec, storage_id: pulumi.Input[str], import_from: str | None = None) -> proxmoxve.VmLegacyDiskArgs:
    """scsiINDEX on the RBD storage, raw, with DISK's size, cache and discard (IMPORT_FROM: its first data)."""
    return proxmoxve.VmLegacyDiskArgs(
        interface=f"scsi{index}",
        datastore_id=storage_id,
        import_from=import_from,
        size=disk.size_gb,
        file_format="raw",
        cache=disk.cache,
        discard=disk.discard,
    )


def disks(vm: VmSpec, storage_id: pulumi.Input[str]) -> list[proxmoxve.VmLegacyDiskArgs]:
    """scsi0..N on the RBD storage; for a clone, scsi0 is the template's disk (grown to its size)."""
    return [rbd_disk(index, disk, storage_id) for index, disk in enumerate(vm.disk_list())]


def initialization(cloud: CloudInitSpec, storage_id: pulumi.Input[str], interface: str) -> proxmoxve.VmLegacyInitializationArgs:
    """The cloud-init drive on the RBD storage (PVE names it vm-<id>-cloudinit) and what PVE writes on it."""
    static = cloud.ip != "dhcp"
    return proxmoxve.VmLegacyInitializationArgs(
        datastore_id=storage_id,
        interface=interface,
        user_account=proxmoxve.VmLegacyInitializationUserAccountArgs(username=cloud.user, keys=list(cloud.ssh_keys) or None),
        ip_configs=[
            proxmoxve.VmLegacyInitializationIpConfigArgs(
                ipv4=proxmoxve.VmLegacyInitializationIpConfigIpv4Args(address=cloud.ip, gateway=cloud.gateway if static else None)
            )
        ],
        dns=proxmoxve.VmLegacyInitializationDnsArgs(servers=list(cloud.dns) or None, domain=cloud.search_domain) if cloud.dns or cloud.search_domain else None,
    )


def agent(enabled: bool) -> proxmoxve.VmLegacyAgentArgs:
    """The guest agent flag. The program reads no address from the agent, so bpg is told not to wait
    for one: with the flag on, bpg otherwise waits for the agent's addresses after every create and
    in every refresh, up to agent.timeout (15 minutes), for a guest whose agent is not up yet."""
    return proxmoxve.VmLegacyAgentArgs(enabled=enabled, wait_for_ip=proxmoxve.VmLegacyAgentWaitForIpArgs(disabled=True) if enabled else None)


def vm_tags(vm: VmSpec, owner: str) -> list[str]:
    # Sorted, as PVE keeps them (bpg sorts what it sends).
    return sorted({*vm.tags, *(tag for tag in (owner, *([] if vm.ha else [NO_HA_TAG])) if tag)})


class HaVm(pulumi.ComponentResource):
    """One VM on ``ceph-rbd`` (VirtIO SCSI, cache writeback, discard on, VirtIO net), from an ISO or
    a clone of a template (TEMPLATE: the stack's template resource, when it makes it), and its HA resource."""

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
        template: pulumi.Resource | None = None,
        template_node: str | None = None,
        ha_depends_on: list[pulumi.Resource] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("pveceph:proxmox:HaVm", name, None, opts)
        child = child_options(self, opts)
        clone = vm.clone
        self.machine = proxmoxve.VmLegacy(
            f"{name}-vm",
            node_name=vm.node,
            vm_id=vm.id,
            name=vm.name,
            description=vm.description,
            pool_id=vm.pve_pool,
            cpu=proxmoxve.VmLegacyCpuArgs(cores=vm.cores, type=vm.cpu_type),
            memory=proxmoxve.VmLegacyMemoryArgs(dedicated=vm.memory_mb),
            scsi_hardware=SCSI_CONTROLLER,
            # a linked clone is an RBD clone of the template's base image on the same storage; a full
            # clone is a copy, made on the VM's storage
            clone=proxmoxve.VmLegacyCloneArgs(
                vm_id=clone.template, full=clone.full, datastore_id=storage_id if clone.full else None, node_name=clone.node or template_node
            )
            if clone
            else None,
            disks=disks(vm, storage_id),
            network_devices=network_devices(vm),
            cdrom=proxmoxve.VmLegacyCdromArgs(file_id=vm.iso, interface="ide2") if vm.iso else None,
            initialization=initialization(vm.cloud_init, storage_id, "ide0" if vm.iso else "ide2") if vm.cloud_init else None,
            agent=agent(vm.agent),
            startup=proxmoxve.VmLegacyStartupArgs(order=vm.start_order) if vm.start_order is not None else None,
            operating_system=proxmoxve.VmLegacyOperatingSystemArgs(type="l26"),
            # The stack's owner tag goes in with the create call itself, so the rerun of an
            # interrupted `up` still recognises its own half-made VM (components/owners.py).
            tags=vm_tags(vm, owner),
            on_boot=True,
            started=(ha.state == "started") if vm.ha else True,
            stop_on_destroy=True,
            # bpg's client has no per-call timeout: a hung API call is bounded by the create's own
            timeout_create=create_timeout,
            timeout_clone=create_timeout if clone else None,
            # A replacement (a new template; allowed only with vms[].allowReplace, components/vm_changes.py)
            # frees the VM id first: PVE cannot hold two VMs at one id.
            opts=pulumi.ResourceOptions.merge(
                child,
                pulumi.ResourceOptions(ignore_changes=vm_ignore_changes(vm), delete_before_replace=True, depends_on=[template] if template else None),
            ),
        )
        self.vm_id = self.machine.vm_id
        self.sid = pulumi.Output.from_input(sid(vm))
        self.resource: proxmoxve.Haresource | None = None
        if vm.ha:
            affinity = next((a for a in ha.affinities if a.name == vm.affinity), None)
            self.resource = proxmoxve.Haresource(
                f"{name}-ha",
                # Through the VM's vm_id, known in a preview (the policy pack reads it), and a property
                # dependency on the VM: a VM replaced (vms[].allowReplace) replaces its HA resource
                # too (replace_on_changes), deleted before the VM's delete purges it from HA.
                resource_id=self.machine.vm_id.apply(lambda _: sid(vm)),
                type="vm",
                state=ha.state,
                max_restart=ha.max_restart,
                max_relocate=ha.max_relocate,
                group=vm.affinity if ha.mode == "groups" and vm.affinity else None,
                # PVE 9 keeps failback on the resource (PVE 8: the group's nofailback); sent only to
                # turn it off, so a resource without it keeps PVE's default (on), and bpg deletes it
                # when it is dropped again
                failback=False if ha.mode == "rules" and affinity is not None and not affinity.failback else None,
                comment=owned_comment(owner),
                opts=pulumi.ResourceOptions.merge(
                    child,
                    pulumi.ResourceOptions(
                        depends_on=[self.machine, *(ha_depends_on or []), *([group] if group else [])],
                        replace_on_changes=["resourceId"],
                        delete_before_replace=True,  # one HA resource per sid: the old one goes first
                    ),
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


def resource_affinity_rule(name: str, spec: ResourceAffinitySpec, owner: str, resources: list[str], opts: pulumi.ResourceOptions) -> proxmoxve.Harule:
    """PVE 9: VMs kept together (positive) or apart (negative), an HA rule of type resource-affinity
    (bpg v0.111.1's proxmoxve_harule carries `affinity`)."""
    return proxmoxve.Harule(
        name,
        rule=spec.name,
        type="resource-affinity",
        affinity="positive" if spec.keep == "together" else "negative",
        resources=resources,
        comment=owned_comment(owner),
        opts=opts,
    )


def stack_template(name: str, spec: TemplateSpec, storage_id: pulumi.Input[str], owner: str, opts: pulumi.ResourceOptions) -> proxmoxve.VmLegacy:
    """A template the stack makes: the cloud image imported onto the RBD storage (PVE 8's
    import-from), then marked a template (PVE renames the image base-<id>-disk-0). Never HA, never
    started. bpg's disk size defaults to 8 GB and is applied after the import, so the size is
    always given (templates[].diskGb)."""
    return proxmoxve.VmLegacy(
        name,
        node_name=spec.node,
        vm_id=spec.id,
        name=spec.name,
        template=True,
        started=False,
        scsi_hardware=SCSI_CONTROLLER,
        disks=[rbd_disk(0, DiskSpec(size_gb=spec.disk_gb), storage_id, import_from=spec.image)],  # the runbook's writeback and discard
        network_devices=[proxmoxve.VmLegacyNetworkDeviceArgs(bridge=spec.bridge, model="virtio")],
        operating_system=proxmoxve.VmLegacyOperatingSystemArgs(type="l26"),
        tags=sorted({owner, NO_HA_TAG} - {""}),
        on_boot=False,
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(ignore_changes=phantom_speed_diffs(1))),
    )
