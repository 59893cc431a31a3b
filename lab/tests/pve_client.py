"""A small client of the lab's PVE API for the lab tests (lab/tests/test_pve*.py), and the
helpers they share: polling with a deadline, HA service and VM placement look-ups, the lab's
Ceph. The fixtures that use them are in conftest.py."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import requests

from lab.pve.control import Control, ControlError

ROOT = Path(__file__).resolve().parents[2]
LAB_JSON = ROOT / ".lab" / "lab.json"
STANDALONE_NODES = {"pve-node1": "127.10.120.11", "pve-node2": "127.10.120.12", "pve-node3": "127.10.120.13"}
STANDALONE_CONTROL = ("127.10.120.10", 8007)
# PVE seconds from a node failure to the recovery (agent lock expiry) plus loop slack
RECOVERY_PVE_SECONDS = 120 + 10
# real seconds a dead librbd client's watch may linger: the lab's osd_client_watch_timeout is 5 s
# (lab/ceph.py); a margin for a loaded machine and for a lab made before it (Ceph's 30 s, seen up to ~50 s)
WATCH_TIMEOUT = 30 + 40


def running_lab() -> dict | None:
    if os.environ.get("LAB_PVE_TEST_STANDALONE"):
        return None
    try:
        state = json.loads(LAB_JSON.read_text())
    except (OSError, ValueError):
        return None
    pve = state.get("pve")
    if not pve or not Control(pve["control"]).ping():
        return None
    return state


def restore_nodes(ctl: Control) -> None:
    for node, st in ctl.status()["nodes"].items():
        if st["power"] != "on":
            ctl.fault(node, "restore", sshd=True)


class Api:
    """A tiny PVE API client on one node's address (token auth, TLS verified with the CA)."""

    def __init__(self, pve: dict, node: str = "pve-node1", timeout: float = 30) -> None:
        self.base = pve["nodes"][node]["api"] + "/api2/json"
        self.s = requests.Session()
        # per request: REQUESTS_CA_BUNDLE in the environment would win over Session.verify
        self.ca = pve["ca_file"]
        self.s.headers["Authorization"] = f"PVEAPIToken={pve['token_id']}={pve['token_secret']}"
        self.timeout = timeout

    @classmethod
    def root_login(cls, pve: dict, node: str = "pve-node1") -> Api:
        """root@pam with a password ticket: PVE's superuser. An API token, root's included, is not
        root@pam: only root@pam may set a config key in no privilege table, such as `lock`
        (qemu-server API2/Qemu.pm $check_vm_modify_config_perm)."""
        api = cls(pve, node)
        del api.s.headers["Authorization"]
        answer = api.s.post(api.base + "/access/ticket", data={"username": "root@pam", "password": pve["password"]}, verify=api.ca, timeout=api.timeout)
        data = answer.json()["data"]
        api.s.cookies.set("PVEAuthCookie", data["ticket"])
        api.s.headers["CSRFPreventionToken"] = data["CSRFPreventionToken"]
        return api

    def req(self, method: str, path: str, **params):
        kw = {"params": params} if method in ("GET", "DELETE") else {"data": params}
        return self.s.request(method, self.base + path, timeout=self.timeout, verify=self.ca, **kw)

    def ok(self, method: str, path: str, **params):
        r = self.req(method, path, **params)
        assert r.status_code == 200, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()["data"]

    def err(self, method: str, path: str, **params) -> tuple[int, str]:
        r = self.req(method, path, **params)
        assert r.status_code != 200, f"{method} {path} should fail: {r.text}"
        return r.status_code, (r.json().get("message") or "").strip()

    def wait_task(self, upid: str, deadline: float = 120) -> tuple[str, list[str]]:
        node = upid.split(":")[1]
        end = time.monotonic() + deadline
        while True:
            st = self.ok("GET", f"/nodes/{node}/tasks/{upid}/status")
            if st["status"] == "stopped":
                log = [x["t"] for x in self.ok("GET", f"/nodes/{node}/tasks/{upid}/log", limit=500)]
                return st["exitstatus"], log
            assert time.monotonic() < end, f"task {upid} still running"
            time.sleep(0.1)


def poll(what: str, check, deadline: float, interval: float = 0.25):
    end = time.monotonic() + deadline
    last = None
    while True:
        try:
            last = check()
        except (requests.RequestException, ControlError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        assert time.monotonic() < end, f"timed out after {deadline:.0f}s waiting for {what} (last: {last!r})"
        time.sleep(interval)


def service(api: Api, sid: str) -> dict | None:
    for entry in api.ok("GET", "/cluster/ha/status/current"):
        if entry.get("sid") == sid:
            return entry
    return None


def vm_node(api: Api, vmid: int) -> str | None:
    for vm in api.ok("GET", "/cluster/resources", type="vm"):
        if vm["vmid"] == vmid:
            return vm["node"]
    return None


def time_scale(ctl: Control) -> float:
    return ctl.status()["time_scale"]


def recovery_deadline(ctl: Control, extra: float = 0) -> float:
    return RECOVERY_PVE_SECONDS * max(time_scale(ctl), 0.01) + 15 + extra


def ceph_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CEPH_")}


def make_rbd_storage(api: Api, ceph_pool: dict, sid: str, who: str, keyring: str | None = None) -> None:
    api.ok(
        "POST",
        "/storage",
        storage=sid,
        type="rbd",
        pool=ceph_pool["pool"],
        monhost=ceph_pool["monhost"],
        username=ceph_pool["users"][who],
        content="images",
        keyring=keyring or ceph_pool["keys"][who],
    )
    ceph_pool["storages"].append(sid)


def rbd_ls(ceph_pool: dict) -> list[str]:
    return ceph_pool["sh"]("rbd", *ceph_pool["adm"], "ls", ceph_pool["pool"]).split()
