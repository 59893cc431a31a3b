"""Fixtures of the lab PVE tests (test_pve*.py): the lab's API (the running lab, or a standalone
one without Ceph), its control channel, VMs made and removed, a test pool on the lab's Ceph.
`pve_restore` (used by the PVE test modules) leaves the cluster as each test found it.

Module-scoped: a standalone API (on 127.10.120.x, inside the lab's address range) is stopped
when its module ends, before later suites (tests/drill) bring the lab up or down and check
that no listener is left on the lab's addresses."""

from __future__ import annotations

import subprocess
import uuid

import pytest
from pve_client import STANDALONE_CONTROL, STANDALONE_NODES, Api, ceph_env, restore_nodes, running_lab, vm_node

import lab.pve as labpve
from lab.pve.control import Control


@pytest.fixture(scope="module")
def lab_env(tmp_path_factory):
    """{"pve": <lab.json pve>, "ceph": <lab.json ceph> or None, "standalone": bool}."""
    state = running_lab()
    if state is not None:
        yield {"pve": state["pve"], "ceph": state.get("ceph") if state["pve"].get("ceph_backed") else None, "ssh": state.get("ssh"), "standalone": False}
        return
    tmp = tmp_path_factory.mktemp("pve-lab")
    info = labpve.start(None, state_dir=tmp, nodes=STANDALONE_NODES, control=STANDALONE_CONTROL, restart=True)
    try:
        yield {"pve": info, "ceph": None, "ssh": None, "standalone": True}
    finally:
        labpve.stop(state_dir=tmp)


@pytest.fixture(scope="module")
def ctl(lab_env) -> Control:
    return Control(lab_env["pve"]["control"])


@pytest.fixture
def pve_restore(ctl):
    """Every test leaves the cluster as it found it: nodes up, mode, time scale, no failures."""
    before = ctl.status()
    yield
    ctl.clear_failures()
    restore_nodes(ctl)
    now = ctl.status()
    if now["mode"] != before["mode"]:
        ctl.set_mode(before["mode"])
    if now["time_scale"] != before["time_scale"]:
        ctl.set_time_scale(before["time_scale"])


@pytest.fixture
def vms(lab_env):
    """Make VMs (vmids 9xx); every one is removed at the end with its HA resource."""
    made: list[int] = []

    def make(vmid: int, node: str = "pve-node1", **params) -> int:
        api = Api(lab_env["pve"])
        params.setdefault("scsi0", "local-lvm:1")
        status, log = api.wait_task(api.ok("POST", f"/nodes/{node}/qemu", vmid=vmid, name=f"t{vmid}", **params))
        assert status == "OK", log
        made.append(vmid)
        return vmid

    yield make
    ctl = Control(lab_env["pve"]["control"])
    ctl.clear_failures()
    restore_nodes(ctl)
    api = Api(lab_env["pve"], "pve-node2")
    for vmid in made:
        sid = f"vm:{vmid}"
        if api.req("GET", f"/cluster/ha/resources/{sid}").status_code == 200:
            api.ok("DELETE", f"/cluster/ha/resources/{sid}")
        node = vm_node(api, vmid)
        if node is None:
            continue
        st = api.ok("GET", f"/nodes/{node}/qemu/{vmid}/status/current")
        if st["status"] == "running":
            api.wait_task(api.ok("POST", f"/nodes/{node}/qemu/{vmid}/status/stop"))
        status, log = api.wait_task(api.ok("DELETE", f"/nodes/{node}/qemu/{vmid}", purge=1, **{"destroy-unreferenced-disks": 1}))
        # a disk whose removal failed (a watcher a test left) is PVE's warning: the VM is gone
        assert status == "OK" or status.startswith("WARNINGS: "), log


@pytest.fixture(scope="module")
def ceph_pool(lab_env):
    """A test pool on the lab's Ceph with two clients: profile rbd, and the runbook's caps."""
    ceph = lab_env.get("ceph")
    if not ceph:
        pytest.skip("needs the running lab with its Ceph (python -m lab up)")
    adm = ["-c", ceph["conf"], "-k", ceph["admin_keyring"]]
    tag = uuid.uuid4().hex[:6]
    pool, good, weak = f"labtest-{tag}", f"labtest-good-{tag}", f"labtest-weak-{tag}"

    def sh(*argv: str) -> str:
        r = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, env=ceph_env())
        assert r.returncode == 0, f"{argv}: {r.stderr}"
        return r.stdout

    sh("ceph", *adm, "osd", "pool", "create", pool, "8")
    sh("rbd", *adm, "pool", "init", pool)
    keys = {
        "good": sh("ceph", *adm, "auth", "get-or-create", f"client.{good}", "mon", "profile rbd", "osd", f"profile rbd pool={pool}"),
        "weak": sh("ceph", *adm, "auth", "get-or-create", f"client.{weak}", "mon", "allow r", "osd", f"allow rwx pool={pool}"),
    }
    info = {"pool": pool, "users": {"good": good, "weak": weak}, "keys": keys, "sh": sh, "adm": adm, "monhost": " ".join(ceph["monitors"]), "storages": []}
    yield info
    api = Api(lab_env["pve"], "pve-node2")
    for sid in info["storages"]:
        api.req("DELETE", f"/storage/{sid}")
    subprocess.run(["ceph", *adm, "osd", "pool", "rm", pool, pool, "--yes-i-really-really-mean-it"], capture_output=True, env=ceph_env())
    for user in (good, weak):
        subprocess.run(["ceph", *adm, "auth", "rm", f"client.{user}"], capture_output=True, env=ceph_env())
