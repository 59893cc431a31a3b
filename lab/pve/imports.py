"""The disk images the lab's `local` storage holds for import: `local:import/<name>` (pve-storage's
`import` content type, PVE >= 8.2, as an operator puts a cloud image there with the GUI's upload
or `pvesm`; the lab's `local` lists `import` among its contents for it).

Two images of the same disk, raw and qcow2 (Debian's qemu-img), each IMAGE_SIZE bytes with a
1 MiB marker at MARKER_AT and nothing else: a disk made with `import-from=local:import/<name>`
(Qemu.pm create_disks -> $import_from_volid -> clone_disk: the source's size allocated on the
target, its data converted onto it) holds the marker at that offset, which a test reads back from
Ceph.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

IMAGE_SIZE = 64 * 1024**2
MARKER_AT = 16 * 1024**2
RAW, QCOW2 = "lab-cloud.raw", "lab-cloud.qcow2"


def marker() -> bytes:
    """1 MiB of bytes that are the same on every run (SHA-256 blocks of a counter)."""
    return b"".join(hashlib.sha256(f"pve-ceph-ha lab import marker {i}".encode()).digest() for i in range(1024**2 // 32))


def make(folder: Path) -> dict[str, str]:
    """The images in FOLDER (made once): {name: path}. The qcow2 one only where qemu-img is installed."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / RAW
    if not raw.exists() or raw.stat().st_size != IMAGE_SIZE:
        with open(raw, "wb") as out:
            out.truncate(IMAGE_SIZE)
            out.seek(MARKER_AT)
            out.write(marker())
    made = {RAW: str(raw)}
    if shutil.which("qemu-img"):
        qcow2 = folder / QCOW2
        if not qcow2.exists():
            subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)], check=True, capture_output=True, timeout=60)
        made[QCOW2] = str(qcow2)
    return made


def image_format(path: str) -> str:
    return "qcow2" if path.endswith(".qcow2") else "raw"


def virtual_size(path: str) -> int:
    """The disk's size as PVE reads it (file_size_info: `qemu-img info`), the file's for a raw one."""
    if image_format(path) == "raw":
        return Path(path).stat().st_size
    done = subprocess.run(["qemu-img", "info", "--output=json", "-f", "qcow2", path], check=True, capture_output=True, text=True, timeout=30)
    return int(json.loads(done.stdout)["virtual-size"])


@contextmanager
def raw_view(path: str) -> Iterator[str]:
    """A raw file of the disk: the file itself, or a qcow2 converted (qemu-img convert) into a temporary one."""
    if image_format(path) == "raw":
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="lab-import-") as folder:
        target = str(Path(folder) / "disk.raw")
        subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", path, target], check=True, capture_output=True, timeout=300)
        yield target
