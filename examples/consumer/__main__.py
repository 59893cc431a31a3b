"""A consumer of pve-ceph-ha: one more VM on the storage that stack registered.

pulumi config set infraStack organization/pve-ceph-ha/lab
pulumi config set proxmoxEndpoint https://127.10.20.11:8006
pulumi config set --secret proxmoxApiToken 'root@pam!pulumi=<uuid>'
pulumi config set vmId 301
"""

import pulumi
import pulumi_proxmoxve as proxmoxve

config = pulumi.Config()
infra = pulumi.StackReference(config.require("infraStack"))
storage_id = infra.require_output("storageId")
vms = infra.require_output("vms")

provider = proxmoxve.Provider("pve", endpoint=config.require("proxmoxEndpoint"), api_token=config.require_secret("proxmoxApiToken"))
vm_id = config.require_int("vmId")
vm = proxmoxve.VmLegacy(
    "app",
    node_name=vms.apply(lambda v: v[0]["initialNode"]),
    vm_id=vm_id,
    name=f"app{vm_id}",
    cpu=proxmoxve.VmLegacyCpuArgs(cores=1, type="x86-64-v2-AES"),
    memory=proxmoxve.VmLegacyMemoryArgs(dedicated=512),
    scsi_hardware="virtio-scsi-pci",
    disks=[proxmoxve.VmLegacyDiskArgs(interface="scsi0", datastore_id=storage_id, size=1, file_format="raw", cache="writeback", discard="on")],
    network_devices=[proxmoxve.VmLegacyNetworkDeviceArgs(bridge="vmbr0", model="virtio")],
    started=False,
    stop_on_destroy=True,
    opts=pulumi.ResourceOptions(provider=provider),
)

pulumi.export("vmId", vm.vm_id)
pulumi.export("storageId", storage_id)
# The cephx key stays a secret here too: a StackReference keeps the producer's secrets secret.
pulumi.export("clientKey", infra.require_output("clientKey"))
