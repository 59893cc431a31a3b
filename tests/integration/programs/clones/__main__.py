"""Templates and clones through bpg's provider, on the lab: the calls issue #25's VMs will make.

Not the product's program (that one makes VMs from an ISO, components/ha_vm.py): this one makes,
with bpg's VmLegacy as the product will, a template from the lab's cloud image on `local`
(`import-from`, then POST .../template), a linked clone with cloud-init by DHCP and a full clone
with a static address, each with two NICs (one on a VLAN), started so
PVE writes their cloud-init drives. The role PulumiCephHA does not hold VM.Clone nor
VM.Config.Cloudinit yet, so it runs with the token CLONES_TOKEN gives (the lab's root token).

Environment: CLONES_ENDPOINT, CLONES_TOKEN, CLONES_STORAGE, CLONES_IMAGE (`local:import/<file>`),
CLONES_KEY (an SSH public key), CLONES_TEMPLATE (the template's VM id; the clones are +1, +2).
"""

import os

import pulumi
import pulumi_proxmoxve as proxmoxve

from components.ha_vm import phantom_speed_diffs

env = os.environ
provider = proxmoxve.Provider("pve", endpoint=env["CLONES_ENDPOINT"], api_token=pulumi.Output.secret(env["CLONES_TOKEN"]))
storage, template_id = env["CLONES_STORAGE"], int(env["CLONES_TEMPLATE"])
ignore = pulumi.ResourceOptions(provider=provider, ignore_changes=phantom_speed_diffs())  # pulumi-proxmoxve#664

template = proxmoxve.VmLegacy(
    "template",
    node_name="pve-node1",
    vm_id=template_id,
    name="golden",
    template=True,
    started=False,
    scsi_hardware="virtio-scsi-pci",
    disks=[
        proxmoxve.VmLegacyDiskArgs(
            interface="scsi0", datastore_id=storage, import_from=env["CLONES_IMAGE"], size=1, file_format="raw", cache="writeback", discard="on"
        )
    ],
    network_devices=[proxmoxve.VmLegacyNetworkDeviceArgs(bridge="vmbr0", model="virtio")],
    operating_system=proxmoxve.VmLegacyOperatingSystemArgs(type="l26"),
    opts=ignore,
)

for offset, full, address, gateway in ((1, False, "dhcp", None), (2, True, "192.0.2.10/24", "192.0.2.1")):
    vm_id = template_id + offset
    clone = proxmoxve.VmLegacy(
        f"clone{offset}",
        node_name="pve-node1",
        vm_id=vm_id,
        name=f"clone{vm_id}",
        clone=proxmoxve.VmLegacyCloneArgs(vm_id=template_id, full=full, datastore_id=storage if full else None),
        started=True,
        stop_on_destroy=True,
        # The lab's guests run no QEMU guest agent: a started VM with the agent flag makes bpg wait
        # for the agent's addresses until agent.timeout (15 min), as with any guest without it
        agent=proxmoxve.VmLegacyAgentArgs(enabled=False),
        disks=[proxmoxve.VmLegacyDiskArgs(interface="scsi0", datastore_id=storage, size=1, cache="writeback", discard="on")],
        network_devices=[
            proxmoxve.VmLegacyNetworkDeviceArgs(bridge="vmbr0", model="virtio"),
            proxmoxve.VmLegacyNetworkDeviceArgs(bridge="vmbr0", model="virtio", vlan_id=20),
        ],
        initialization=proxmoxve.VmLegacyInitializationArgs(
            datastore_id=storage,
            interface="ide2",
            user_account=proxmoxve.VmLegacyInitializationUserAccountArgs(username="ops", keys=[env["CLONES_KEY"]]),
            ip_configs=[proxmoxve.VmLegacyInitializationIpConfigArgs(ipv4=proxmoxve.VmLegacyInitializationIpConfigIpv4Args(address=address, gateway=gateway))],
            dns=proxmoxve.VmLegacyInitializationDnsArgs(servers=["192.0.2.53"]),
        ),
        opts=pulumi.ResourceOptions.merge(ignore, pulumi.ResourceOptions(depends_on=[template])),
    )
    pulumi.export(f"clone{offset}", clone.vm_id)
