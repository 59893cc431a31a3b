"""The policies of the pve-ceph-ha pack: a name, a description and an enforcement level per check.

Mandatory policies stop ``pulumi up`` (and fail ``pulumi preview``); advisory ones print a warning.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from pveceph_policy import checks
from pveceph_policy.resources import Res

MANDATORY = EnforcementLevel.MANDATORY
ADVISORY = EnforcementLevel.ADVISORY

HA_DISKS_ON_RBD = "ha-vm-disks-on-shared-rbd"
DISK_SETTINGS = "vm-disks-virtio-scsi-writeback-discard"
HA_CPU_TYPE = "ha-vms-one-cpu-type-not-host"
VMS_HA_MANAGED = "vms-ha-managed-unless-no-ha"
CEPHX_CAPS = "cephx-client-caps-profile-rbd"
HA_MAX_RESTART = "ha-max-restart-at-least-one"
RBD_CONTENT = "rbd-storage-content-images"
PVE_TOKEN = "pve-token-not-root"
CEPH_IDENTITY = "ceph-identity-not-admin"

ResourceCheck = Callable[[Res], list[str]]
StackCheck = Callable[[Sequence[Res]], list[checks.Violation]]


def resource_policy(name: str, description: str, level: EnforcementLevel, check: ResourceCheck) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        for message in check(Res.of(args)):
            report_violation(message, None)

    return ResourceValidationPolicy(name=name, description=description, enforcement_level=level, validate=validate)


def stack_policy(name: str, description: str, level: EnforcementLevel, check: StackCheck) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        for violation in check([Res.of(resource) for resource in args.resources]):
            report_violation(violation.message, violation.urn)

    return StackValidationPolicy(name=name, description=description, enforcement_level=level, validate=validate)


POLICIES: list[Policy] = [
    stack_policy(
        HA_DISKS_ON_RBD,
        "Every disk of an HA-managed VM is on the shared Ceph RBD storage, so any node can start the VM after a failover.",
        MANDATORY,
        checks.ha_disks_on_rbd,
    ),
    resource_policy(
        DISK_SETTINGS,
        "VM disks on the VirtIO SCSI bus (virtio-scsi-pci or virtio-scsi-single) with cache writeback and discard on (runbook 3-1).",
        ADVISORY,
        checks.vm_disk_settings,
    ),
    stack_policy(
        HA_CPU_TYPE,
        "Every HA-managed VM uses the same CPU type, never host, so it can start on any node (runbook 8).",
        MANDATORY,
        checks.ha_cpu_type,
    ),
    stack_policy(
        VMS_HA_MANAGED,
        f"Every VM of the stack is HA-managed (an HA resource vm:<id>) unless it is tagged {checks.NO_HA_TAG}.",
        ADVISORY,
        checks.vms_ha_managed,
    ),
    resource_policy(
        CEPHX_CAPS,
        "The cephx client's caps include the blocklist permission (mon 'profile rbd'), so a node can break a dead node's lock on a disk.",
        MANDATORY,
        checks.ceph_client_caps,
    ),
    resource_policy(
        HA_MAX_RESTART,
        "Every HA resource has max restart 1 or more (runbook 5).",
        MANDATORY,
        checks.ha_max_restart,
    ),
    resource_policy(
        RBD_CONTENT,
        "The RBD storage's content includes images (Disk image), so VM disks can live on it (runbook 2-3).",
        MANDATORY,
        checks.rbd_storage_content,
    ),
    resource_policy(
        PVE_TOKEN,
        "The stack's PVE API token is not a root@pam token: a privilege-separated token with the role PulumiCephHA (docs/permissions.md).",
        ADVISORY,
        checks.pve_token_not_root,
    ),
    resource_policy(
        CEPH_IDENTITY,
        "The program's Ceph commands do not run as client.admin: ceph.admin.clientId names a client with the documented caps (docs/permissions.md).",
        ADVISORY,
        checks.ceph_identity_not_admin,
    ),
]
