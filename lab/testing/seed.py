"""HA VMs on the lab for the drill, made through the lab's PVE API, without the Pulumi program
(`make drill` needs no stack; `make demo` then `python -m drill --stack lab` drills the program's VMs): a pool and a `profile rbd` cephx client on the lab's real
Ceph (over SSH to the ceph-admin role), an RBD storage with that key, VMs with scsi0 on it,
registered as HA resources and started.

    python -m lab.testing.seed [--vm 101]     # what `make drill` runs before the drill

Lab and test code (lab/testing): the product (drill/) never imports it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from clients.pve import api as pve_api
from clients.ssh import Connection, SshExecutor, check
from lab import wait_for
from lab.paths import LAB_JSON

STORAGE, POOL, CLIENT = "drill-rbd", "drill-pool", "drill"


class LabAccess:
    """The lab as the drill's tests use it: each node's API, SSH to the Ceph admin, the control channel."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state
        self.pve, self.ssh = state["pve"], state["ssh"]
        self.nodes = sorted(self.pve["nodes"])

    def api(self, node: str = "pve-node2") -> Any:
        token = f"{self.pve['token_id']}={self.pve['token_secret']}"
        return pve_api.connect(pve_api.api_props(self.pve["nodes"][node]["api"], token, True, self.pve["ca_file"]), timeout=30)

    def any_api(self) -> Any:
        """The API of a node that is on (another test may have faulted one)."""
        for node in self.nodes:
            if self.control("GET", "/status")["nodes"][node]["listening"]:
                return self.api(node)
        raise RuntimeError("no lab PVE node is listening")

    def ceph(self, *argv: str) -> str:
        ssh = self.ssh
        conn = Connection(
            ssh["hosts"]["ceph-admin"], int(ssh["port"]), ssh["user"], Path(ssh["private_key_path"]).read_text(), Path(ssh["known_hosts"]).read_text()
        )
        return check(SshExecutor(conn).run(list(argv), timeout=120), " ".join(argv[:3])).stdout

    def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        import urllib.request

        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.pve["control"] + path, data=data, method=method, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())["data"]

    def fault(self, node: str, action: str) -> None:
        self.control("POST", "/fault", {"node": node, "action": action, "sshd": True})

    def restore_all(self) -> None:
        for node, info in self.control("GET", "/status")["nodes"].items():
            if info["power"] != "on":
                self.fault(node, "restore")
        wait_for("every node online", lambda: all(n["online"] and n["listening"] for n in self.control("GET", "/status")["nodes"].values()), 30)

    def wait_task(self, upid: str, deadline: float = 120) -> None:
        node = upid.split(":")[1]
        api = self.any_api()
        status = wait_for(f"task {upid}", lambda: (s := api.nodes(node).tasks(upid).status.get())["status"] == "stopped" and s, deadline)
        if status.get("exitstatus") != "OK":
            raise RuntimeError(f"task {upid}: {status.get('exitstatus')}")

    def service(self, sid: str) -> dict[str, Any]:
        return next((e for e in self.any_api().cluster.ha.status.current.get() if e.get("sid") == sid), {})

    def vm_node(self, vmid: int) -> str | None:
        return next((r["node"] for r in self.any_api().cluster.resources.get(type="vm") if r.get("vmid") == vmid), None)


def ensure_storage(lab: LabAccess, storage: str = STORAGE, pool: str = POOL, client: str = CLIENT) -> str:
    """An RBD storage on the lab's Ceph with a `profile rbd` client (idempotent); returns its id."""
    api = lab.any_api()
    if any(s["storage"] == storage for s in api.storage.get()):
        return storage
    lab.ceph("ceph", "osd", "pool", "create", pool, "8")
    lab.ceph("rbd", "pool", "init", pool)
    keyring = lab.ceph("ceph", "auth", "get-or-create", f"client.{client}", "mon", "profile rbd", "osd", f"profile rbd pool={pool}")
    api.storage.post(
        storage=storage, type="rbd", pool=pool, monhost=" ".join(lab.state["ceph"]["monitors"]), username=client, content="images", keyring=keyring
    )

    def active_everywhere() -> bool:
        return all(api.nodes(node).storage(storage).status.get()["active"] == 1 for node in lab.nodes)

    wait_for(f"storage {storage} active on every node", active_everywhere, 60)
    return storage


def drop_storage(lab: LabAccess, storage: str, pool: str, client: str) -> None:
    lab.any_api().storage(storage).delete()
    lab.ceph("ceph", "osd", "pool", "rm", pool, pool, "--yes-i-really-really-mean-it")
    lab.ceph("ceph", "auth", "rm", f"client.{client}")


def ensure_ha_vm(lab: LabAccess, vmid: int, storage: str, state: str = "started", node: str = "pve-node1", name: str | None = None) -> str:
    """VM VMID with scsi0 on STORAGE, an HA resource in STATE; waits until HA reports it so. Returns its sid."""
    sid, api = f"vm:{vmid}", lab.any_api()
    if lab.vm_node(vmid) is None:
        lab.wait_task(api.nodes(node).qemu.post(vmid=vmid, name=name or f"drill{vmid}", memory=512, cores=1, scsihw="virtio-scsi-single", scsi0=f"{storage}:1"))
    if not any(r["sid"] == sid for r in api.cluster.ha.resources.get()):
        api.cluster.ha.resources.post(sid=sid, state=state, max_restart=1, max_relocate=1)
    wait_ha_state(lab, sid, state)
    return sid


def wait_ha_state(lab: LabAccess, sid: str, state: str = "started", deadline: float = 120) -> dict[str, Any]:
    return wait_for(f"{sid} {state}", lambda: (s := lab.service(sid)).get("state") == state and s, deadline)


def remove_vm(lab: LabAccess, vmid: int, deadline: float = 180) -> None:
    """Remove VMID and its HA resource; retried while a start still holds the VM's lock (a
    restart after a fault waits up to ~45 s for the dead owner's RBD lock)."""
    api, sid = lab.any_api(), f"vm:{vmid}"
    if any(r["sid"] == sid for r in api.cluster.ha.resources.get()):
        api.cluster.ha.resources(sid).delete()

    def destroyed() -> bool:
        node = lab.vm_node(vmid)
        if node is None:
            return True
        vm = lab.any_api().nodes(node).qemu(vmid)
        if vm.status.current.get()["status"] == "running":
            lab.wait_task(vm.status.stop.post())
        lab.wait_task(vm.delete(purge=1, **{"destroy-unreferenced-disks": 1}))
        return True

    wait_for(f"VM {vmid} destroyed", destroyed, deadline, interval=2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.testing.seed", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--vm", type=int, default=101)
    args = p.parse_args(argv)
    import lab

    lab_api = LabAccess(lab.up(log=lambda _line: None))
    print(f"seed: the lab is up ({LAB_JSON})")
    sid = f"vm:{args.vm}"
    if lab_api.vm_node(args.vm) is not None and lab_api.service(sid):
        print(f"seed: {sid} exists (from the lab stack or an earlier seed); waiting until it is started")
        wait_ha_state(lab_api, sid)
    else:
        storage = ensure_storage(lab_api)
        ensure_ha_vm(lab_api, args.vm, storage, name=f"vm{args.vm}")
        print(f"seed: {sid} created on {storage} (RBD pool {POOL} on the lab's Ceph) and started under HA")
    print(f"seed: {lab_api.service(sid).get('status')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
