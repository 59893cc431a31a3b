"""/nodes/{node}/qemu/{vmid}/config: a VM's config, its drives and the volumes it owns, one reading
for the program, verify and the drill.

PVE's drive keys (PVE::QemuServer::Drive): ``scsi0``, ``virtio1``, ``sata2``, ``ide3``, ``efidisk0``,
``tpmstate0``; a CD-ROM is a drive with ``media=cdrom``. A volume detached from its drive stays the
VM's as ``unusedN`` until it is removed, so it is still one of the VM's images in the pool.
"""

from __future__ import annotations

import re
from typing import Any

from clients.pve import Get

DRIVE_KEY = re.compile(r"^(scsi|virtio|sata|ide|efidisk|tpmstate)\d+$")
UNUSED_KEY = re.compile(r"^unused\d+$")


def config(get: Get, node: str, vmid: int) -> dict[str, Any]:
    """GET /nodes/{node}/qemu/{vmid}/config: the VM's current config, ``{key: value}`` as in
    /etc/pve/qemu-server/{vmid}.conf; read by :func:`disks`, :func:`volumes_on` and for its ``cpu``."""
    return get(f"nodes/{node}/qemu/{vmid}/config")


def disks(config: dict[str, Any]) -> dict[str, str]:
    """The VM's disk drives, ``{key: drive string}``: every drive but CD-ROMs."""
    return {key: str(value) for key, value in config.items() if DRIVE_KEY.match(key) and "media=cdrom" not in str(value)}


def volumes_on(config: dict[str, Any], storage: str) -> list[str]:
    """The volume ids on STORAGE the VM holds, attached or not (``ceph-rbd:vm-101-disk-0``), sorted."""
    found = []
    for key, value in config.items():
        if (DRIVE_KEY.match(key) or UNUSED_KEY.match(key)) and isinstance(value, str) and value.startswith(f"{storage}:"):
            found.append(value.split(",", 1)[0])
    return sorted(found)
