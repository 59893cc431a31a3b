"""A consumer of pve-ceph-ha: one more VM on the RBD storage that stack registered.

It reads the producer stack's outputs through a StackReference (`storageId`, `vms`, and
`clientKey`, which stays a secret here) and puts a VM with its disk on the producer's storage,
on the node where the producer's first VM was placed. With the local file backend the
producer's fully qualified name is `organization/pve-ceph-ha/<stack>`; on Pulumi Cloud,
`<org>/pve-ceph-ha/<stack>`.

    pulumi config set infraStack organization/pve-ceph-ha/lab
    pulumi config set proxmoxEndpoint https://127.10.20.11:8006
    pulumi config set --secret proxmoxApiToken 'root@pam!pulumi=<uuid>'
    pulumi config set vmId 301

The `proxmoxve` plugin checks the API's TLS certificate with the system CAs: for a private CA
export `SSL_CERT_FILE=<ca bundle>` first (the lab's: `.lab/pve/tls/ca-bundle.pem`).
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
    # Not HA-managed (this stack registers no HA resource): the tag says so, for the policy pack.
    # Never null: the provider reads a VM without tags back as [] (components/ha_vm.py does the same).
    tags=["no-ha"],
    started=False,
    stop_on_destroy=True,
    # pulumi-proxmoxve#664 (open): a disk without speed limits always shows an update
    # (`+ speed: {iopsRead: 0, ...}`); ignored by the disk's index, as components/ha_vm.py does
    # (`disks[*].speed` does not reach the bridged provider's diff).
    opts=pulumi.ResourceOptions(provider=provider, ignore_changes=["disks[0].speed"]),
)

pulumi.export("vmId", vm.vm_id)
pulumi.export("storageId", storage_id)
# The cephx key stays a secret here too: a StackReference keeps the producer's secrets secret.
pulumi.export("clientKey", infra.require_output("clientKey"))
