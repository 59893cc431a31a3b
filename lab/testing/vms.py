"""A stack of the whole program with its VMs on the lab (:class:`VmStack`), what the lab and the
state hold of it, and a marker in a VM's disk that proves its data survived (:class:`DiskMarker`).
Used by the VM and HA tests (tests/integration) and bench/fault_recovery.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab import wait_for
from lab.pve.control import Control
from lab.testing.engine import cli
from lab.testing.stack import LabStack, admin, api, changes, client_caps, forget_stack, names, pool_exists

NODES = ("pve-node1", "pve-node2", "pve-node3")
ENDPOINT = "https://127.10.20.13:8006"  # pve-node3: the cases fail pve-node1 and pve-node2 only
PAIR = {"name": "hv-pair", "nodes": {"pve-node1": 1, "pve-node2": 1}, "strict": True, "failback": False}
VM_TYPE, HA_TYPE, RULE_TYPE = "proxmoxve:index/vmLegacy:VmLegacy", "proxmoxve:index/haresource:Haresource", "proxmoxve:index/harule:Harule"


def iso_vm(vmid: int, node: str, name: str | None = None, **extra: Any) -> dict[str, Any]:
    """The engine tests' small VM (`vms[]` entry): 1 core, 256 MiB, a 1 GiB disk on the RBD storage, the lab's ISO."""
    return {
        "id": vmid,
        "name": name or f"vm{vmid}",
        "node": node,
        "cores": 1,
        "memoryMb": 256,
        "diskGb": 1,
        "iso": "local:iso/debian-12.iso",
        "bridge": "vmbr0",
        "cpuType": "x86-64-v2-AES",
        **extra,
    }


def ha_placement(vm_ids: list[int]) -> dict[int, tuple[str, str]]:
    """vmid -> (node, HA state) of those of VM_IDS the HA manager knows, from `ha-manager status` (GET /cluster/ha/status/current)."""
    sids = {f"vm:{vmid}": vmid for vmid in vm_ids}
    return {
        sids[str(e["sid"])]: (str(e.get("node")), str(e.get("state")))
        for e in api().cluster.ha.status.current.get()
        if e.get("type") == "service" and str(e.get("sid")) in sids
    }


def vm_config(prefix: str, vm_ids: list[int], node: str = "pve-node1", **extra: Any) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        names(prefix)(config)
        config["proxmox"]["endpoint"] = ENDPOINT
        config["ha"] = {**config["ha"], "affinities": [PAIR]}
        config["vms"] = [{**config["vms"][0], "id": i, "name": f"vm{i}", "node": node, "affinity": "hv-pair", **extra} for i in vm_ids]
        config["allowPoolDeletion"] = True  # the cases leave no pool behind (3 OSDs hold few)

    return edit


class VmStack(LabStack):
    """A stack of the whole program with VMS, and what the lab and the state hold of it."""

    def __init__(self, prefix: str, vm_ids: list[int], lab_state: dict[str, Any], tmp: Path, **extra: Any) -> None:
        forget_stack(prefix, vm_ids)
        super().__init__(prefix, lab_state, tmp, vm_config(prefix, vm_ids, **extra))
        self.prefix, self.vm_ids = prefix, list(vm_ids)

    # -- the lab --
    def lab_vms(self) -> list[int]:
        return sorted(r["vmid"] for r in api().cluster.resources.get(type="vm") if r["vmid"] in self.vm_ids)

    def images(self) -> list[str]:
        pool = f"{self.prefix}-pool"  # one SSH round trip; none when the pool is gone (an error of `rbd ls` still raises)
        return sorted(admin(f"if ceph osd pool ls | grep -qx {pool}; then rbd ls {pool}; fi").split())

    def lab_ha(self) -> list[str]:
        sids = {f"vm:{i}" for i in self.vm_ids}
        return sorted(r["sid"] for r in api().cluster.ha.resources.get() if r["sid"] in sids)

    def lab_rules(self) -> list[str]:
        sids = {f"vm:{i}" for i in self.vm_ids}
        return sorted(r["rule"] for r in api().cluster.ha.rules.get() if sids & set(str(r.get("resources", "")).split(",")))

    # -- the state --
    def deployment(self) -> dict[str, Any]:
        done = cli(self.env, "stack", "export", "--stack", self.name, cwd=self.work)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["deployment"]

    def recorded(self, type_: str, deployment: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The state's live resources of TYPE_, from DEPLOYMENT when the caller exported it already."""
        resources = (deployment or self.deployment()).get("resources") or []
        return [r for r in resources if r["type"] == type_ and not r.get("delete")]

    def counts(self) -> dict[str, Any]:
        """What the lab and the state hold of this stack, side by side (one `pulumi stack export`)."""
        deployment = self.deployment()
        vms, has, rules = (self.recorded(kind, deployment) for kind in (VM_TYPE, HA_TYPE, RULE_TYPE))
        return {
            "lab vms": self.lab_vms(),
            "state vms": sorted(int(r["id"]) for r in vms),
            "lab images": self.images(),
            "lab ha": self.lab_ha(),
            "state ha": sorted(r["id"] for r in has),
            "lab rules": self.lab_rules(),
            "state rules": sorted(r["id"] for r in rules),
            "unfinished": [r["urn"] for r in [*vms, *has, *rules] if r.get("initErrors")],
            "pending": deployment.get("pending_operations") or [],
        }

    def assert_converged(self) -> None:
        """The lab equals the state and the config; nothing is orphaned or duplicated; preview is clean."""
        counts = self.counts()
        sids = [f"vm:{i}" for i in sorted(self.vm_ids)]
        want = {
            "lab vms": sorted(self.vm_ids),
            "state vms": sorted(self.vm_ids),
            "lab images": sorted(f"vm-{i}-disk-0" for i in self.vm_ids),
            "lab ha": sids,
            "state ha": sids,
            "lab rules": ["hv-pair"],
            "state rules": ["hv-pair"],
            "unfinished": [],
            "pending": [],
        }
        assert counts == want, json.dumps(counts, indent=1)
        assert [s["storage"] for s in api().storage.get()].count(f"{self.prefix}-rbd") == 1
        assert client_caps(self.prefix) is not None and pool_exists(f"{self.prefix}-pool")
        assert changes(self.preview().change_summary) == {}, self.text()[-3000:]


# -- the marker in a VM's disk --

MARKER = r"""
import hashlib, os, sys, rados, rbd
pool, image, mode = sys.argv[1:4]
with rados.Rados(conffile=os.environ["CEPH_CONF"]) as cluster, cluster.open_ioctx(pool) as io, rbd.Image(io, image) as disk:
    if mode == "write":
        disk.write(os.urandom(1 << 20), 0)
    print(hashlib.sha256(disk.read(0, 1 << 20)).hexdigest())
"""


class DiskMarker:
    """1 MiB of random bytes at the start of a VM's disk (its RBD image). The running VM holds the
    image's exclusive lock, so the marker is written while HA holds the VM stopped."""

    def __init__(self, pool: str, vmid: int) -> None:
        self.pool, self.vmid = pool, vmid
        self.image = f"vm-{vmid}-disk-0"
        sid = f"vm:{vmid}"
        api().cluster.ha.resources(sid).put(state="stopped")
        wait_for(f"{sid} stopped", lambda: vm_status(vmid) == "stopped", deadline=120)
        wait_for("its disk released", lambda: str(vmid) not in Control().holders(), deadline=60)
        self.digest = self._run("write")
        api().cluster.ha.resources(sid).put(state="started")
        wait_for(f"{sid} running again", lambda: vm_status(vmid) == "running", deadline=120)

    def _run(self, mode: str) -> str:
        return admin(f"/usr/bin/python3 -c '{MARKER}' {self.pool} {self.image} {mode}").strip()

    def intact(self) -> bool:
        return self._run("read") == self.digest


def vm_status(vmid: int) -> str | None:
    return next((str(r.get("status")) for r in api().cluster.resources.get(type="vm") if r["vmid"] == vmid), None)


def vm_node(vmid: int) -> str | None:
    return next((str(r["node"]) for r in api().cluster.resources.get(type="vm") if r["vmid"] == vmid and r.get("status") == "running"), None)
