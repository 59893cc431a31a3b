"""The real program (the project's __main__.py), with what its config model refuses, so that the
policy pack alone must catch it in ``pulumi preview --policy-pack policy``:

    policy-lab:cpuType   host   every VM of the validated config gets this CPU type (the model
                                refuses host for an HA VM: vms[].cpuType)
    policy-lab:extraVm   421    one more VM on the stack's RBD storage, declared here without an
                                HA resource and without the no-ha tag (the program tags every VM
                                with ha: false no-ha, so its config cannot make one)
"""

import pulumi
import pulumi_proxmoxve as proxmoxve

from components import config, credentials
from components.stack import PveCephHa

try:
    settings = config.load_from_pulumi()
    secrets = credentials.load(settings)
except config.ConfigError as error:
    raise pulumi.RunError(str(error)) from None

test = pulumi.Config("policy-lab")
cpu_type = test.get("cpuType")
if cpu_type:
    # model_copy does not validate: the config model's own rule is bypassed on purpose
    settings = settings.model_copy(update={"vms": [vm.model_copy(update={"cpu_type": cpu_type}) for vm in settings.vms]})

deployment = PveCephHa(pulumi.get_stack(), settings, secrets)
for key, value in deployment.outputs.items():
    pulumi.export(key, value)

extra = test.get_int("extraVm")
if extra:
    proxmoxve.VmLegacy(
        f"vm{extra}",
        node_name=settings.proxmox.nodes[0].name,
        vm_id=extra,
        name=f"vm{extra}",
        cpu=proxmoxve.VmLegacyCpuArgs(cores=1, type="x86-64-v2-AES"),
        scsi_hardware="virtio-scsi-pci",
        disks=[
            proxmoxve.VmLegacyDiskArgs(
                interface="scsi0", datastore_id=deployment.storage.storage_id, size=1, file_format="raw", cache="writeback", discard="on"
            )
        ],
        tags=[],
        started=False,
        opts=pulumi.ResourceOptions(provider=deployment.provider),
    )
