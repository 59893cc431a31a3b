"""bpg's provider makes templates and clones on the lab as it would on PVE (issue #25's groundwork):
the real engine and the real plugin run tests/integration/programs/clones (a template from the lab's
cloud image, a linked clone with cloud-init by DHCP, a full clone with a static address), and
the lab answers every call as PVE does (no `unmodelled`, no lab fault in the call log). Read back
from Ceph: the template's base image and its protected `__base__`, the linked clone an RBD clone
of it, the full clone a copy, both holding the image's marker, each clone's cloud-init drive
holding its user, key and address. A preview after the up plans nothing; destroy leaves nothing."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import lab.pve
from lab.pve import imports
from lab.testing import rbd
from lab.testing.stack import PROGRAMS, LabStack, admin, api, planned_changes, remove_vms, storages
from lab.testing.steps import run_steps

pytestmark = [pytest.mark.lab, pytest.mark.engine]

POOL, CLIENT, STORAGE = "clones-pool", "clones", "clones-rbd"
TEMPLATE, LINKED, FULL = 960, 961, 962
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPqP8a6dM2oSfqkKQ9x0kbbR8q1kXk7zX1nVt0yq3pQe ops@example"


def forget() -> None:
    remove_vms([LINKED, FULL, TEMPLATE])
    if STORAGE in storages():
        api().storage(STORAGE).delete()
    admin(f"ceph osd pool rm {POOL} {POOL} --yes-i-really-really-mean-it >/dev/null 2>&1; ceph auth del client.{CLIENT} >/dev/null 2>&1; true")


@pytest.fixture(scope="module")
def clones(lab_state: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabStack]:
    forget()
    admin(f"ceph osd pool create {POOL} 8 >/dev/null && rbd pool init {POOL}")
    key = json.loads(admin(f"ceph auth get-or-create client.{CLIENT} mon 'profile rbd' osd 'profile rbd pool={POOL}' -f json"))[0]["key"]
    monitors = " ".join(lab_state["ceph"]["monitors"])
    api().storage.post(
        storage=STORAGE, type="rbd", pool=POOL, monhost=monitors, username=CLIENT, content="images", keyring=f"[client.{CLIENT}]\n\tkey = {key}\n"
    )
    pve = lab_state["pve"]
    env = {
        "CLONES_ENDPOINT": pve["endpoint"],
        "CLONES_TOKEN": f"{pve['token_id']}={pve['token_secret']}",
        "CLONES_STORAGE": STORAGE,
        "CLONES_IMAGE": f"local:import/{imports.QCOW2}",
        "CLONES_KEY": KEY,
        "CLONES_TEMPLATE": str(TEMPLATE),
    }
    stack = LabStack("clones", lab_state, tmp_path_factory.mktemp("clones"), program=PROGRAMS / "clones" / "__main__.py", env=env)
    yield stack
    stack.remove()
    forget()


def images() -> dict[str, dict[str, Any]]:
    return {str(i["image"]) + (f"@{i['snapshot']}" if i.get("snapshot") else ""): i for i in json.loads(admin(f"rbd ls -l --format json {POOL}"))}


def up_meets_only_pves_answers(clones: LabStack) -> None:
    t0 = time.time()
    result = clones.up()
    print(f"\n  a template from a qcow2 image and two clones: {time.time() - t0:.1f} s, {result.summary.resource_changes}")
    assert result.summary.result == "succeeded"
    assert lab.pve.unmodelled(t0, agent="Go-http-client") == []
    calls = {(c["method"], c["path"].split("/")[-1]) for c in lab.pve.calls(t0, agent="Go-http-client")}
    assert {("POST", "template"), ("POST", "clone")} <= calls, sorted(calls)


def the_disks_are_rbd_images_of_the_template_holding_its_bytes(clones: LabStack) -> None:
    held = images()
    base = f"base-{TEMPLATE}-disk-0"
    assert held[f"{base}@__base__"]["protected"] == "true", held
    assert held[f"vm-{LINKED}-disk-0"]["parent"]["image"] == base, held  # linked: an RBD clone
    assert "parent" not in held[f"vm-{FULL}-disk-0"], held  # full: a copy
    expected = hashlib.sha256(imports.marker()).hexdigest()
    for vmid in (LINKED, FULL):
        assert hashlib.sha256(rbd.read(POOL, f"vm-{vmid}-disk-0", imports.MARKER_AT, len(imports.marker()))).hexdigest() == expected, vmid
        assert held[f"vm-{vmid}-cloudinit"]["size"] == 4 * 1024**2


def each_clones_cloud_init_drive_holds_its_user_key_and_address(clones: LabStack, tmp_path: Path) -> None:
    for vmid, network in (
        (LINKED, "      - type: dhcp4\n"),
        (FULL, "      - type: static\n        address: '192.0.2.10'\n        netmask: '255.255.255.0'\n        gateway: '192.0.2.1'\n"),
    ):
        files = rbd.cloudinit_files(POOL, vmid, tmp_path)
        assert f"user: ops\nssh_authorized_keys:\n  - {KEY}\n" in files["user-data"], files["user-data"]
        assert network in files["network-config"] and "      - '192.0.2.53'\n" in files["network-config"], files["network-config"]


def a_preview_after_the_up_plans_nothing(clones: LabStack) -> None:
    assert planned_changes(clones) == set(), clones.text()[-3000:]


def destroy_leaves_no_image(clones: LabStack) -> None:
    assert clones.destroy().summary.result == "succeeded"
    assert images() == {}


def test_templates_and_clones_through_bpgs_provider(clones: LabStack, tmp_path: Path) -> None:
    run_steps(
        [
            up_meets_only_pves_answers,
            the_disks_are_rbd_images_of_the_template_holding_its_bytes,
            each_clones_cloud_init_drive_holds_its_user_key_and_address,
            a_preview_after_the_up_plans_nothing,
            destroy_leaves_no_image,
        ],
        clones=clones,
        tmp_path=tmp_path,
    )
