"""A VM made by hand (runbook 3-1: VirtIO SCSI, cache writeback, discard on, VirtIO net), declared
as the program declares its VMs (components/ha_vm.py), to adopt it with

    pulumi import proxmoxve:index/vmLegacy:VmLegacy <vm name> <node>/<vmid>

The default provider reads `proxmoxve:endpoint` and the secret `proxmoxve:apiToken`; the VM's
values come from this stack's config (`vmId`, `node`, `storage`, and `tags`: none by default).
"""

import pulumi
import pulumi_proxmoxve as proxmoxve

config = pulumi.Config()
vm_id = config.require_int("vmId")
proxmoxve.VmLegacy(
    f"vm{vm_id}",
    node_name=config.require("node"),
    vm_id=vm_id,
    name=f"vm{vm_id}",
    cpu=proxmoxve.VmLegacyCpuArgs(cores=1, type="x86-64-v2-AES"),
    memory=proxmoxve.VmLegacyMemoryArgs(dedicated=512),
    scsi_hardware="virtio-scsi-pci",
    disks=[proxmoxve.VmLegacyDiskArgs(interface="scsi0", datastore_id=config.require("storage"), size=1, file_format="raw", cache="writeback", discard="on")],
    network_devices=[proxmoxve.VmLegacyNetworkDeviceArgs(bridge="vmbr0", model="virtio")],
    operating_system=proxmoxve.VmLegacyOperatingSystemArgs(type="l26"),
    tags=config.get_object("tags") or [],  # never null: the provider reads a VM without tags back as []
    on_boot=True,
    started=True,
    stop_on_destroy=True,
    # pulumi-proxmoxve#664: a disk without speed limits always shows an update (as components/ha_vm.py).
    opts=pulumi.ResourceOptions(ignore_changes=["disks[0].speed"]),
)
