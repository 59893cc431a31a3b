"""A test's own look at RBD images on the lab's Ceph, as its admin (librbd, Debian's python3-rbd):
an image's bytes, and the files of a cloud-init drive (its ISO read with Debian's isoinfo)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lab
from lab.pve.rbdstore import _import_rados, _import_rbd


@contextlib.contextmanager
def image(pool: str, name: str, write: bool = False) -> Iterator[Any]:
    """The image NAME of POOL, opened through librbd as the lab's Ceph admin."""
    ceph = lab.load()["ceph"]
    rados, rbd = _import_rados(), _import_rbd()
    cluster = rados.Rados(conffile=ceph["conf"], conf={"keyring": ceph["admin_keyring"]})
    cluster.connect(timeout=10)
    try:
        with cluster.open_ioctx(pool) as ioctx, rbd.Image(ioctx, name, read_only=not write) as opened:
            yield opened
    finally:
        cluster.shutdown()


def read(pool: str, name: str, offset: int, length: int) -> bytes:
    with image(pool, name) as opened:
        return bytes(opened.read(offset, length))


def cloudinit_files(pool: str, vmid: int, folder: Path) -> dict[str, str]:
    """The files of VMID's cloud-init drive (`vm-<vmid>-cloudinit`), read back from Ceph."""
    with image(pool, f"vm-{vmid}-cloudinit") as drive:
        (folder / "ci.iso").write_bytes(drive.read(0, drive.size()))
    out = {}
    for name in ("user-data", "network-config", "meta-data"):
        done = subprocess.run(["isoinfo", "-R", "-i", str(folder / "ci.iso"), "-x", f"/{name}"], capture_output=True, text=True, timeout=30, check=True)
        out[name] = done.stdout
    return out
