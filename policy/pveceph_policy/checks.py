"""What each policy checks, as plain functions over :class:`Res`: no engine is needed to test them.

A resource check takes one resource (its inputs) and returns the problems as messages; a stack
check takes every resource of the stack (their outputs) and returns :class:`Violation` s, each
on the resource it is about. A value not known yet (a preview) is skipped, never guessed.
Where a property is not set, the provider's or PVE's default applies, and so it does here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from pveceph_policy.resources import (
    UNKNOWN,
    Res,
    ha_vm_id,
    identities,
    is_ceph_client,
    is_ha_resource,
    is_rbd_storage,
    is_vm,
    known,
    vm_id,
    vm_label,
    whole_number,
)

# pulumi-proxmoxve (VmLegacy) and PVE defaults for properties left unset.
DEFAULT_DATASTORE = "local-lvm"
DEFAULT_SCSI_HARDWARE = "virtio-scsi-pci"
DEFAULT_CACHE = "none"
DEFAULT_DISCARD = "ignore"
DEFAULT_CPU_TYPE = "qemu64"
DEFAULT_MAX_RESTART = 1

VIRTIO_SCSI = ("virtio-scsi-pci", "virtio-scsi-single")
NO_HA_TAG = "no-ha"
"""The VmLegacy tag that marks a VM as deliberately not HA-managed (``vms[].ha: false``)."""


class Violation(NamedTuple):
    message: str
    urn: str | None = None


# -- what the stack holds ----------------------------------------------------------------


def ha_vm_ids(resources: Sequence[Res]) -> set[int]:
    return {number for res in resources if is_ha_resource(res) and (number := ha_vm_id(res)) is not None}


def ha_vms(resources: Sequence[Res]) -> list[Res]:
    """The VMs of the stack that an HA resource ``vm:<id>`` of the stack manages."""
    ids = ha_vm_ids(resources)
    return [res for res in resources if is_vm(res) and vm_id(res) in ids]


def rbd_storage_ids(resources: Sequence[Res]) -> set[str]:
    return {sid for res in resources if is_rbd_storage(res) and isinstance(sid := res.get("storageId"), str)}


def datastores(vm: Res) -> list[tuple[str, Any]]:
    """Where a VM keeps data: each disk, the EFI disk, the TPM state and the cloud-init drive."""
    disks = vm.get("disks")
    if disks is UNKNOWN:
        return [("disks", UNKNOWN)]
    places: list[tuple[str, Any]] = []
    for disk in disks or []:
        if isinstance(disk, Mapping):
            places.append((f"disk {disk.get('interface', '')}".strip(), disk.get("datastoreId", DEFAULT_DATASTORE)))
    for key, what in (("efiDisk", "EFI disk"), ("tpmState", "TPM state"), ("initialization", "cloud-init drive")):
        block = vm.get(key)
        if isinstance(block, Mapping):
            places.append((what, block.get("datastoreId", DEFAULT_DATASTORE)))
    return places


def cpu_type(vm: Res) -> Any:
    cpu = vm.get("cpu")
    if cpu is UNKNOWN:
        return UNKNOWN
    return cpu.get("type", DEFAULT_CPU_TYPE) if isinstance(cpu, Mapping) else DEFAULT_CPU_TYPE


def tags(vm: Res) -> Any:
    value = vm.get("tags")
    if not known(value):
        return UNKNOWN
    return {str(tag).lower() for tag in value or [] if known(tag)}


# -- stack checks (outputs of every resource) ---------------------------------------------


def ha_disks_on_rbd(resources: Sequence[Res]) -> list[Violation]:
    """Every disk of an HA-managed VM is on an RBD storage of the stack (the storage all nodes share)."""
    storages = rbd_storage_ids(resources)
    shown = ", ".join(sorted(storages)) or "none in this stack"
    violations = []
    for vm in ha_vms(resources):
        for what, datastore in datastores(vm):
            if known(datastore) and datastore not in storages:
                violations.append(
                    Violation(
                        f"{vm_label(vm)} is HA-managed but its {what} is on {datastore}, not on the shared Ceph RBD storage "
                        f"({shown}): after a failover the other node cannot reach it. Put it on the RBD storage (runbook 3-1).",
                        vm.urn,
                    )
                )
    return violations


def ha_cpu_type(resources: Sequence[Res]) -> list[Violation]:
    """Every HA-managed VM uses one CPU type, and never ``host`` (runbook 8)."""
    vms = [(vm, cpu) for vm in ha_vms(resources) if known(cpu := cpu_type(vm))]
    violations = [
        Violation(
            f"{vm_label(vm)} is HA-managed with CPU type host: it may not start on another node's CPU after a failover. "
            "Use one CPU model on every HA VM, e.g. x86-64-v2-AES (runbook 8).",
            vm.urn,
        )
        for vm, cpu in vms
        if cpu == "host"
    ]
    counts = Counter(cpu for _, cpu in vms if cpu != "host")
    if len(counts) > 1:
        common = min(counts, key=lambda cpu: (-counts[cpu], cpu))
        violations += [
            Violation(
                f"{vm_label(vm)} has CPU type {cpu} while the other HA VMs use {common}: every HA VM must use one CPU type "
                "so it can start on any node (runbook 8).",
                vm.urn,
            )
            for vm, cpu in vms
            if cpu not in ("host", common)
        ]
    return violations


def vms_ha_managed(resources: Sequence[Res]) -> list[Violation]:
    """Every VM of the stack has an HA resource, unless it is tagged ``no-ha``."""
    if any(is_ha_resource(res) and not known(res.get("resourceId")) for res in resources):
        return []  # an HA resource whose VM is not known yet: checked again during the update
    managed = ha_vm_ids(resources)
    violations = []
    for vm in filter(is_vm, resources):
        number, marks = vm_id(vm), tags(vm)
        if number is None or number in managed or not known(marks) or NO_HA_TAG in marks:
            continue
        violations.append(
            Violation(
                f"{vm_label(vm)} is not HA-managed: there is no HA resource vm:{number} in this stack, so it does not fail over. "
                f"Register it (runbook 5), or tag the VM {NO_HA_TAG} if it must not fail over (vms[].ha: false).",
                vm.urn,
            )
        )
    return violations


# -- resource checks (inputs of one resource) ----------------------------------------------


def vm_disk_settings(vm: Res) -> list[str]:
    """Runbook 3-1: Bus VirtIO SCSI, Cache Write back, Discard on."""
    if not is_vm(vm):
        return []
    label = vm_label(vm)
    problems = []
    controller = vm.get("scsiHardware", DEFAULT_SCSI_HARDWARE)
    if known(controller) and controller not in VIRTIO_SCSI:
        problems.append(f"{label}: SCSI controller is {controller}, not VirtIO SCSI ({' or '.join(VIRTIO_SCSI)}) (runbook 3-1: Bus VirtIO SCSI).")
    disks = vm.get("disks")
    for disk in disks if known(disks) and disks else []:
        if not isinstance(disk, Mapping):
            continue
        interface = disk.get("interface", "")
        if known(interface) and not str(interface).startswith("scsi"):
            problems.append(f"{label}: disk {interface} is not on the VirtIO SCSI bus; use scsi0, scsi1, ... (runbook 3-1: Bus VirtIO SCSI).")
        cache = disk.get("cache", DEFAULT_CACHE)
        if known(cache) and cache != "writeback":
            problems.append(f"{label}: disk {interface} has cache {cache}, not writeback (runbook 3-1: Cache Write back).")
        discard = disk.get("discard", DEFAULT_DISCARD)
        if known(discard) and discard != "on":
            problems.append(
                f"{label}: disk {interface} has discard {discard}, not on: blocks freed in the guest stay allocated in the Ceph pool (runbook 3-1: Discard on)."
            )
    return problems


def ceph_client_caps(client: Res) -> list[str]:
    """The cephx client can blocklist a dead node's client: its mon caps grant ``profile rbd``."""
    if not is_ceph_client(client):
        return []
    caps = client.get("caps")
    if not isinstance(caps, Mapping):
        return []
    mon = caps.get("mon", "")
    if not known(mon):
        return []
    grants = {" ".join(grant.split()) for grant in str(mon).split(",")}
    if "profile rbd" in grants:
        return []
    shown = f"mon caps '{mon}'" if mon else "no mon caps"
    return [
        f"client.{client.get('name')} has {shown}, without the blocklist permission of 'profile rbd': the surviving node "
        "cannot blocklist a dead node's client and take over its exclusive lock on the disk, so a failover can hang. "
        "Use mon 'profile rbd' osd 'profile rbd pool=<pool>' (ceph.client.caps: profile-rbd)."
    ]


def ha_max_restart(resource: Res) -> list[str]:
    """Runbook 5: Max Restart 1 (at least one restart on the node before HA relocates the VM)."""
    if not is_ha_resource(resource):
        return []
    number = whole_number(resource.get("maxRestart", DEFAULT_MAX_RESTART))
    if number is None or number >= 1:
        return []
    return [
        f"{resource.get('resourceId')}: max restart is {number}: a VM whose start fails is not restarted on its node first. "
        "Set ha.maxRestart to at least 1 (runbook 5: Max Restart 1)."
    ]


def rbd_storage_content(storage: Res) -> list[str]:
    """Runbook 2-3: Content Disk image (``images``), or no VM disk can live on the storage."""
    if not is_rbd_storage(storage):
        return []
    content = storage.get("content")
    if content is None or not known(content):
        return []  # unset: PVE's default content for an RBD storage is images
    items = {str(item).strip() for item in (content.split(",") if isinstance(content, str) else content)}
    if "images" in items:
        return []
    return [
        f"storage {storage.get('storageId')} has content '{','.join(sorted(items))}' without images (Disk image): "
        "VM disks cannot be put on it. Include images in storage.content (runbook 2-3: Content Disk image)."
    ]


def pve_token_not_root(owners: Res) -> list[str]:
    """The stack's PVE API token is not a root@pam token (every right on the cluster)."""
    token = (identities(owners) or {}).get("tokenId")
    if not known(token) or not isinstance(token, str) or not token.startswith("root@pam!"):
        return []
    return [
        f"the stack's API token {token} is a root@pam token: it holds every right on the cluster. "
        f"Give the stack a privilege-separated token with the role PulumiCephHA on its paths (docs/permissions.md)."
    ]


def ceph_identity_not_admin(owners: Res) -> list[str]:
    """The program's Ceph commands do not run as client.admin."""
    found = identities(owners)
    if found is None:
        return []
    ceph_id = found.get("cephId", "admin")
    if not known(ceph_id) or ceph_id != "admin":
        return []
    return [
        "the program's Ceph commands run with the admin keyring (client.admin): every cap on the cluster. "
        "Give them a client with only the caps they need and set ceph.admin.clientId (docs/permissions.md)."
    ]
