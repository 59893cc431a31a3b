"""The lab's templates and clones on the real Ceph (lab/pve/api/nodes_qemu_clone.py), read back
from Ceph itself: a template's base image and its protected `__base__`, a linked clone that is an
RBD clone of it, a full clone that is a copy, each holding the template's bytes; the cloud-init
drive's volume; and a template's base image kept while a linked clone uses it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pve_client import Api, make_rbd_storage, rbd_ls

from lab.pve import imports
from lab.testing import rbd

pytestmark = [pytest.mark.lab, pytest.mark.timeout(300), pytest.mark.usefixtures("pve_restore")]

SID = "lt-clone"
TEMPLATE, LINKED, FULL, PLAIN = 931, 932, 933, 934
MARKER_AT = 300 * 1024**2  # a 1 MiB marker 300 MiB into a 1 GiB disk
MARKER = os.urandom(1024**2)


def image(ceph_pool: dict[str, Any], name: str, write: bool = False) -> Any:
    """One image of the test pool through librbd, as the admin."""
    return rbd.image(ceph_pool["pool"], name, write)


def info(ceph_pool: dict[str, Any], name: str) -> dict[str, Any]:
    return dict(json.loads(ceph_pool["sh"]("rbd", *ceph_pool["adm"], "info", "--format", "json", f"{ceph_pool['pool']}/{name}")))


def marker_of(ceph_pool: dict[str, Any], name: str) -> str:
    with image(ceph_pool, name) as opened:
        return hashlib.sha256(opened.read(MARKER_AT, len(MARKER))).hexdigest()


def task(api: Api, method: str, path: str, warnings: int = 0, **params: Any) -> list[str]:
    """The task's log; it ended OK, or with WARNINGS pve-common's workers count (`WARN:` lines)."""
    status, log = api.wait_task(api.ok(method, path, **params))
    assert status == (f"WARNINGS: {warnings}" if warnings else "OK"), log
    return log


@pytest.fixture
def clones(lab_env: dict[str, Any], ceph_pool: dict[str, Any]) -> Iterator[Api]:
    api = Api(lab_env["pve"])
    if SID not in ceph_pool["storages"]:
        make_rbd_storage(api, ceph_pool, SID, "good")
    yield api
    for vmid in (LINKED, FULL, PLAIN, TEMPLATE):  # the linked clone before its template
        if api.req("GET", f"/nodes/pve-node1/qemu/{vmid}/config").status_code == 200:
            if api.ok("GET", f"/nodes/pve-node1/qemu/{vmid}/status/current")["status"] == "running":
                api.wait_task(api.ok("POST", f"/nodes/pve-node1/qemu/{vmid}/status/stop"))
            api.wait_task(api.ok("DELETE", f"/nodes/pve-node1/qemu/{vmid}", purge=1))


def test_a_template_and_its_linked_and_full_clones_hold_its_bytes(clones: Api, ceph_pool: dict[str, Any]) -> None:
    api = clones
    task(api, "POST", "/nodes/pve-node1/qemu", vmid=TEMPLATE, name="golden", scsi0=f"{SID}:1,discard=on", ide2=f"{SID}:cloudinit")
    config = api.ok("GET", f"/nodes/pve-node1/qemu/{TEMPLATE}/config")
    # the cloud-init drive is the volume vm-<id>-cloudinit of 4 MiB (Qemu.pm create_disks)
    assert config["ide2"] == f"{SID}:vm-{TEMPLATE}-cloudinit,media=cdrom", config
    assert info(ceph_pool, f"vm-{TEMPLATE}-cloudinit")["size"] == 4 * 1024**2
    with image(ceph_pool, f"vm-{TEMPLATE}-disk-0", write=True) as disk:
        disk.write(MARKER, MARKER_AT)
    expected = hashlib.sha256(MARKER).hexdigest()

    # template: the disk becomes base-<id>-disk-0 with its __base__ snapshot protected; the cloud-init drive stays
    task(api, "POST", f"/nodes/pve-node1/qemu/{TEMPLATE}/template")
    config = api.ok("GET", f"/nodes/pve-node1/qemu/{TEMPLATE}/config")
    assert config["scsi0"].startswith(f"{SID}:base-{TEMPLATE}-disk-0,"), config
    images = rbd_ls(ceph_pool)
    assert f"base-{TEMPLATE}-disk-0" in images and f"vm-{TEMPLATE}-disk-0" not in images, images
    snaps = json.loads(ceph_pool["sh"]("rbd", *ceph_pool["adm"], "snap", "ls", "--format", "json", f"{ceph_pool['pool']}/base-{TEMPLATE}-disk-0"))
    assert [(s["name"], s["protected"]) for s in snaps] == [("__base__", "true")], snaps

    # linked (a template's default): an RBD clone of the base image's __base__
    task(api, "POST", f"/nodes/pve-node1/qemu/{TEMPLATE}/clone", newid=LINKED, name="linked")
    linked = api.ok("GET", f"/nodes/pve-node1/qemu/{LINKED}/config")
    assert linked["scsi0"].startswith(f"{SID}:base-{TEMPLATE}-disk-0/vm-{LINKED}-disk-0,"), linked
    assert "discard=on" in linked["scsi0"] and "size=1G" in linked["scsi0"], linked
    assert linked["ide2"] == f"{SID}:vm-{LINKED}-cloudinit,media=cdrom", linked  # its own, empty (clone_disk)
    parent = info(ceph_pool, f"vm-{LINKED}-disk-0")["parent"]
    assert (parent["image"], parent["snapshot"]) == (f"base-{TEMPLATE}-disk-0", "__base__"), parent
    assert marker_of(ceph_pool, f"vm-{LINKED}-disk-0") == expected

    # full: a copy, no parent
    task(api, "POST", f"/nodes/pve-node1/qemu/{TEMPLATE}/clone", newid=FULL, name="full", full=1)
    full = api.ok("GET", f"/nodes/pve-node1/qemu/{FULL}/config")
    assert full["scsi0"].startswith(f"{SID}:vm-{FULL}-disk-0,"), full
    assert "parent" not in info(ceph_pool, f"vm-{FULL}-disk-0")
    assert info(ceph_pool, f"vm-{FULL}-disk-0")["size"] == 1024**3
    assert marker_of(ceph_pool, f"vm-{FULL}-disk-0") == expected

    # the storage lists the linked clone under PVE's volume id, and answers for it
    volids = {c["volid"]: c for c in api.ok("GET", f"/nodes/pve-node1/storage/{SID}/content")}
    linked_volid = f"{SID}:base-{TEMPLATE}-disk-0/vm-{LINKED}-disk-0"
    assert linked_volid in volids and volids[linked_volid]["vmid"] == LINKED, sorted(volids)
    assert api.ok("GET", f"/nodes/pve-node1/storage/{SID}/content/{linked_volid}")["size"] == 1024**3

    # the template's base image stays while the linked clone uses it; the VM goes (destroy_vm warns)
    log = task(api, "DELETE", f"/nodes/pve-node1/qemu/{TEMPLATE}", warnings=1, purge=1)
    assert any(f"base volume 'base-{TEMPLATE}-disk-0' is still in use by linked clones" in line for line in log), log
    assert log[-1] == "TASK WARNINGS: 1", log
    assert api.req("GET", f"/nodes/pve-node1/qemu/{TEMPLATE}/config").status_code != 200
    assert f"base-{TEMPLATE}-disk-0" in rbd_ls(ceph_pool)
    assert marker_of(ceph_pool, f"vm-{LINKED}-disk-0") == expected
    # the clones go with their disks; the base image is left, as PVE leaves it
    task(api, "DELETE", f"/nodes/pve-node1/qemu/{LINKED}", purge=1)
    task(api, "DELETE", f"/nodes/pve-node1/qemu/{FULL}", purge=1)
    left = rbd_ls(ceph_pool)
    assert not [i for i in left if i.startswith((f"vm-{LINKED}-", f"vm-{FULL}-", f"vm-{TEMPLATE}-"))], left


def test_a_disk_that_is_not_a_base_image_cannot_be_linked(clones: Api, ceph_pool: dict[str, Any]) -> None:
    api = clones
    task(api, "POST", "/nodes/pve-node1/qemu", vmid=PLAIN, name="plain", scsi0=f"{SID}:1")
    status, message = api.err("POST", f"/nodes/pve-node1/qemu/{PLAIN}/clone", newid=LINKED, full=0)
    assert (status, message) == (500, f"Linked clone feature is not supported for '{SID}:vm-{PLAIN}-disk-0' (scsi0)")
    assert not [i for i in rbd_ls(ceph_pool) if i.startswith(f"vm-{LINKED}-")]


def cloudinit_files(ceph_pool: dict[str, Any], vmid: int, folder: Path) -> dict[str, str]:
    return rbd.cloudinit_files(ceph_pool["pool"], vmid, folder)


def test_a_clones_cloud_init_drive_holds_its_user_key_and_address(clones: Api, ceph_pool: dict[str, Any], tmp_path: Path) -> None:
    """Written on PUT .../cloudinit and on start (Cloudinit.pm, nocloud), onto the clone's own vm-<id>-cloudinit."""
    api = clones
    task(api, "POST", "/nodes/pve-node1/qemu", vmid=TEMPLATE, name="golden", scsi0=f"{SID}:1", ide2=f"{SID}:cloudinit", net0="virtio,bridge=vmbr0")
    task(api, "POST", f"/nodes/pve-node1/qemu/{TEMPLATE}/template")
    task(api, "POST", f"/nodes/pve-node1/qemu/{TEMPLATE}/clone", newid=LINKED, name="web1")
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPqP8a6dM2oSfqkKQ9x0kbbR8q1kXk7zX1nVt0yq3pQe ops@example"
    api.ok(
        "PUT",
        f"/nodes/pve-node1/qemu/{LINKED}/config",
        ciuser="ops",
        sshkeys=urllib.parse.quote(key + "\n", safe=""),
        ipconfig0="ip=192.0.2.10/24,gw=192.0.2.1",
        nameserver="192.0.2.53",
    )
    api.ok("PUT", f"/nodes/pve-node1/qemu/{LINKED}/cloudinit")
    files = cloudinit_files(ceph_pool, LINKED, tmp_path)
    mac = api.ok("GET", f"/nodes/pve-node1/qemu/{LINKED}/config")["net0"].split(",")[0].split("=")[1].lower()
    assert files["user-data"] == (
        "#cloud-config\nhostname: web1\nmanage_etc_hosts: true\nfqdn: web1\nuser: ops\n"
        f"ssh_authorized_keys:\n  - {key}\nchpasswd:\n  expire: False\nusers:\n  - default\npackage_upgrade: true\n"
    ), files["user-data"]
    assert files["network-config"] == (
        "version: 1\nconfig:\n    - type: physical\n      name: eth0\n"
        f"      mac_address: '{mac}'\n      subnets:\n      - type: static\n        address: '192.0.2.10'\n"
        "        netmask: '255.255.255.0'\n        gateway: '192.0.2.1'\n    - type: nameserver\n      address:\n      - '192.0.2.53'\n"
    ), files["network-config"]
    assert files["meta-data"].startswith("instance-id: ") and len(files["meta-data"].split()[1]) == 40
    # the template's drive is untouched: the clone's is its own
    with image(ceph_pool, f"vm-{TEMPLATE}-cloudinit") as drive:
        assert drive.read(0, 64 * 1024) == bytes(64 * 1024)

    # on start, PVE writes it again from the config of the moment
    api.ok("PUT", f"/nodes/pve-node1/qemu/{LINKED}/config", ipconfig0="ip=dhcp")
    task(api, "POST", f"/nodes/pve-node1/qemu/{LINKED}/status/start")
    assert "- type: dhcp4" in cloudinit_files(ceph_pool, LINKED, tmp_path)["network-config"]


@pytest.mark.parametrize("name", [imports.QCOW2, imports.RAW])
def test_a_disk_imported_from_a_cloud_image_holds_its_bytes_and_a_template_of_it_passes_them_on(clones: Api, ceph_pool: dict[str, Any], name: str) -> None:
    """`<storage>:0,import-from=local:import/<image>` (Qemu.pm create_disks): the image's size and data on RBD."""
    api = clones
    source = f"local:import/{name}"
    assert source in {c["volid"] for c in api.ok("GET", "/nodes/pve-node1/storage/local/content", content="import")}
    status, message = api.err("POST", "/nodes/pve-node1/qemu", vmid=TEMPLATE, scsi0=f"{SID}:4,import-from={source}")
    assert (status, message) == (400, "Parameter verification failed."), message
    task(api, "POST", "/nodes/pve-node1/qemu", vmid=TEMPLATE, name="golden", scsi0=f"{SID}:0,import-from={source},discard=on")
    config = api.ok("GET", f"/nodes/pve-node1/qemu/{TEMPLATE}/config")
    found = re.fullmatch(rf"{SID}:(vm-{TEMPLATE}-disk-\d+),discard=on,size=64M", config["scsi0"])  # the import-from is not kept
    assert found, config
    assert info(ceph_pool, found.group(1))["size"] == imports.IMAGE_SIZE
    expected = hashlib.sha256(imports.marker()).hexdigest()
    with image(ceph_pool, found.group(1)) as disk:
        assert hashlib.sha256(disk.read(imports.MARKER_AT, len(imports.marker()))).hexdigest() == expected
        assert disk.read(0, 1024**2) == bytes(1024**2)
    task(api, "POST", f"/nodes/pve-node1/qemu/{TEMPLATE}/template")
    task(api, "POST", f"/nodes/pve-node1/qemu/{TEMPLATE}/clone", newid=LINKED, name="from-image")
    with image(ceph_pool, f"vm-{LINKED}-disk-0") as disk:
        assert hashlib.sha256(disk.read(imports.MARKER_AT, len(imports.marker()))).hexdigest() == expected
