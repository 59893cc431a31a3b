"""What a change to a VM's config does to the VM, judged before anything is changed.

Each VM's build (its template, full or linked, its disks, NICs, cores and memory) is recorded
with the owner check's inputs (components/owners.py), so the check, which the engine calls on
every preview and up with the last run's inputs and this run's, sees what changed:

- **refused** (nothing is changed): a disk made smaller (PVE resizes only up; bpg would fail
  halfway through the update, "Cannot shrink"), a disk dropped (its data would be deleted), and a
  new template or full/linked, which bpg applies by destroying the VM and cloning it again. The
  last two are done only with ``vms[].allowReplace: true``, and the plan shows the replacement.
- **said** (a line for each on the preview's and the update's output): what PVE does with the
  change on a running VM. Cores and memory are not hot-plugged under PVE's default ``hotplug``
  (network,disk,usb): bpg shuts the VM down and starts it again, which for an HA VM goes through
  the HA manager (qemu-server vm_shutdown and vm_start: ``ha-manager set --state``), and the VM
  ends in its requested state. A disk grows online (``rbd resize``, no restart); a NIC or a disk
  is hot-plugged; a NIC's VLAN tag changes on the running VM (QemuServer.pm vmconfig_update_net).

The engine drops a None from a resource's inputs, so every key is read with ``get``. The record
is the last run's *inputs*: when an ``up`` fails after the check, the record is this
run's, and a later shrink is judged against it. Pure: no pulumi, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from components.config_vm import VmSpec


def build_of(index: int, vm: VmSpec, runs: bool) -> dict[str, Any]:
    """VM's build as recorded (RUNS: its requested power state is running)."""
    return {
        "id": vm.id,
        "entry": f"vms[{index}] ({vm.name})",
        "key": f"vms[{index}]",
        "template": vm.clone.template if vm.clone else None,
        "full": bool(vm.clone and vm.clone.full),
        "disks": [disk.size_gb for disk in vm.disk_list()],
        "nics": [[nic.bridge, nic.vlan] for nic in vm.nic_list()],
        "cores": vm.cores,
        "memoryMb": vm.memory_mb,
        "runs": runs,
        "ha": vm.ha,
        "allowReplace": vm.allow_replace,
    }


def _number(value: Any) -> int | None:
    return None if value is None else int(value)  # the engine hands numbers back as floats


def _by_id(builds: Any) -> dict[int, Mapping[str, Any]]:
    return {int(b["id"]): b for b in builds or [] if isinstance(b, Mapping) and "id" in b}


def refusals(old: Any, new: Sequence[Mapping[str, Any]]) -> list[str]:
    """The changes from OLD's builds to NEW's that would destroy data: each with its key and fix."""
    before = _by_id(old)
    out: list[str] = []
    for now in new:
        was = before.get(int(now["id"]))
        if was is None:
            continue
        key = now["key"]
        sizes, old_sizes = [int(s) for s in now.get("disks") or []], [int(s) for s in was.get("disks") or []]
        for n, (size, old_size) in enumerate(zip(sizes, old_sizes, strict=False)):
            if size < old_size:
                out.append(
                    f"{key}.disks[{n}].sizeGb = {size}: scsi{n} of {now['entry']} is {old_size} GiB and a disk cannot shrink "
                    f"(PVE resizes only up); set {old_size} or more"
                )
        if now.get("allowReplace"):
            continue
        if len(sizes) < len(old_sizes):
            dropped = ", ".join(f"scsi{n}" for n in range(len(sizes), len(old_sizes)))
            out.append(f"{key}.disks: {dropped} of {now['entry']} would be deleted with its data; put it back, or set {key}.allowReplace: true to delete it")
        old_source = (_number(was.get("template")), bool(was.get("full")))
        new_source = (_number(now.get("template")), bool(now.get("full")))
        if old_source != new_source:
            out.append(
                f"{key}.clone = {_describe(new_source)}: {now['entry']} was made as {_describe(old_source)}, and bpg applies this "
                f"by destroying the VM and its disks and making it again; put it back, or set {key}.allowReplace: true to replace it"
            )
    return out


def _describe(source: tuple[int | None, bool]) -> str:
    template, full = source
    return "no clone (an empty disk)" if template is None else f"a {'full' if full else 'linked'} clone of {template}"


def effects(old: Any, new: Sequence[Mapping[str, Any]]) -> list[str]:
    """What applying NEW over OLD does to each running VM, as PVE does it: one line per VM changed."""
    before = _by_id(old)
    out: list[str] = []
    for now in new:
        was = before.get(int(now["id"]))
        if was is None or not now.get("runs"):
            continue
        said: list[str] = []
        for what, unit, key in (("cores", "", "cores"), ("memory", " MiB", "memoryMb")):
            if _number(was.get(key)) not in (None, _number(now.get(key))):
                said.append(f"{what} {_number(was[key])}{unit} → {_number(now.get(key))}{unit}")
        restart = bool(said)
        old_sizes = [int(s) for s in was.get("disks") or []]
        for n, size in enumerate(int(s) for s in now.get("disks") or []):
            if n >= len(old_sizes):
                said.append(f"scsi{n} ({size} GiB) hot-plugged")
            elif size > old_sizes[n]:
                said.append(f"scsi{n} grown online {old_sizes[n]} → {size} GiB (rbd resize, no restart)")
        old_nics = [list(nic) for nic in was.get("nics") or []]
        for n, (bridge, vlan) in enumerate(now.get("nics") or []):
            tag = f"VLAN {_number(vlan)}" if vlan is not None else "untagged"
            if n >= len(old_nics):
                said.append(f"net{n} on {bridge} ({tag}) hot-plugged")
            elif [old_nics[n][0], _number(old_nics[n][1])] != [bridge, _number(vlan)]:
                said.append(f"net{n} moved to {bridge} ({tag}) on the running VM")
        if not said:
            continue
        how = (
            "; the VM restarts: shut down and started again"
            + (" through the HA manager, and ends started" if now.get("ha") else "")
            + " (PVE hot-plugs neither cores nor memory by default)"
            if restart
            else "; no restart"
        )
        out.append(f"{now['entry']}: " + ", ".join(said) + how)
    return out
