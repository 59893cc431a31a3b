"""The lab's Proxmox VE API: a 3-node cluster pve-node1..3 on 127.10.20.11-13:8006 (HTTPS,
API tokens, a CA to verify with), with stateful HA, an HA manager that fences and recovers,
RBD storages and disks on the lab's real Ceph, and real librbd lock handover on failover.

Built on fakepve (AGPL-3.0, pinned: see compat.py): lab and tests only, never the product.

    start(lab_state) -> dict   start it detached (or reuse the running one); the "pve" part
                               of .lab/lab.json
    stop()                     stop it and every VM process it started
    fault(node, action)        poweroff | isolate | restore a node
    info() -> dict             what start() returned, from <state>/pve/info.json
    calls(since=, agent=)      every API call served (<state>/pve/calls.log, calllog.py)
    unmodelled(since=, agent=) the calls whose answer was not PVE's: `unmodelled` (a method
                               PVE has and the lab does not model) or `lab-fault` (an
                               exception in the lab); a client's whole run must meet none

Configuration by environment (start() keywords win):
    LAB_PVE_MODE        rules (PVE 9, default) | groups (PVE 8); switchable at run time
    LAB_TIME_SCALE      real seconds per PVE second (default 0.1: the 60 s fence delay is 6 s)
    LAB_PVE_LOCK_WAIT   real seconds a starting VM waits for its disks' locks (default 90)

The control channel (control.py) steers it at run time; the shims (shims/) are the PVE
nodes' commands over SSH. This module imports nothing heavy: the server runs in its own
process (`python -m lab.pve.server`). Layout: lab/pve/README.md.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from lab.pve import calllog, imports, procs
from lab.pve.control import Control, ControlError

__all__ = ["CONTROL", "ISOS", "NODES", "STACK_TOKEN_ID", "TOKEN_ID", "Control", "ControlError", "calls", "fault", "info", "start", "stop", "unmodelled"]

NODES = {"pve-node1": "127.10.20.11", "pve-node2": "127.10.20.12", "pve-node3": "127.10.20.13"}
CONTROL = ("127.10.20.10", 8007)
API_PORT = 8006
TOKEN_ID = "root@pam!pulumi"  # the lab's own set-up (seeding, faults, tests' direct calls)
STACK_TOKEN_ID = "pulumi@pve!ha"  # the stacks' (make demo, the tests' stacks): PulumiCephHA only
MODES = ("rules", "groups")
DEFAULT_TIME_SCALE = 0.1
# ISO images on every node's `local` storage, as after an upload: the one lab/stack.yaml's VM
# names (`local:iso/debian-12.iso`), with the size of a Debian 12 netinst image.
ISOS = {"debian-12.iso": 658505728}
START_DEADLINE = 30.0
ROOT = Path(__file__).resolve().parents[2]


def _state_dir(state_dir: str | os.PathLike[str] | None) -> Path:
    if state_dir is not None:
        return Path(state_dir).resolve()
    return Path(os.environ.get("LAB_STATE_DIR") or ROOT / ".lab").resolve()


def _paths(state: Path) -> dict[str, Path]:
    pve = state / "pve"
    return {
        "dir": pve,
        "config": pve / "config.json",
        "info": pve / "info.json",
        "log": pve / "server.log",
        "calls": pve / "calls.log",
        "pids": state / "pids",
        "pid": state / "pids" / "pve.pid",
    }


def _write_private(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=2)
        out.write("\n")
    tmp.replace(path)


def _api_up(url: str, ca_file: str, token: str) -> bool:
    import ssl

    ctx = ssl.create_default_context(cafile=ca_file)
    req = urllib.request.Request(url + "/api2/json/version", headers={"Authorization": f"PVEAPIToken={token}"})
    try:
        with urllib.request.urlopen(req, timeout=2, context=ctx) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _healthy(current: dict[str, Any]) -> bool:
    """The running API answers on every node that is powered on. A node someone powered off or
    isolated (a failover under test) does not answer by design: restarting the API then would
    throw away the cluster state that test is watching."""
    ctl = Control(current["control"])
    if not ctl.ping():
        return False
    try:
        powered = [n for n, st in ctl.status()["nodes"].items() if st.get("power") == "on"]
    except (ControlError, KeyError, TypeError):
        return False
    token = f"{current['token_id']}={current['token_secret']}"
    return bool(powered) and all(_api_up(current["nodes"][n]["api"], current["ca_file"], token) for n in powered if n in current["nodes"])


def _api_call(url: str, ca_file: str, token: str, method: str, path: str, fields: dict[str, Any] | None = None) -> Any:
    import ssl
    import urllib.parse

    ctx = ssl.create_default_context(cafile=ca_file)
    data = urllib.parse.urlencode(fields or {}).encode() if method != "GET" else None
    req = urllib.request.Request(url + "/api2/json" + path, data=data, method=method, headers={"Authorization": f"PVEAPIToken={token}"})
    with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
        return json.loads(resp.read() or b"{}").get("data")


# The per-cluster form of the documented ACLs (docs/permissions.md; components/pve_rights.py):
# the lab serves many stacks, whose VMs come and go (PVE drops a /vms/<id> ACL with its VM).
STACK_ACLS = (("/", 0), ("/storage", 1), ("/vms", 1), ("/sdn/zones/localnetwork", 1))
# every PVE pool, with PVE's PVEPoolUser (Pool.Audit): a pool's roles reach all its members (docs/permissions.md)
STACK_POOL_ACL = ("/pool", 1)


def grant_stack_token(url: str, ca_file: str, root_token: str) -> str:
    """What `pveum` does for an operator (docs/permissions.md), through the API with the lab's root
    token: the role PulumiCephHA, the user pulumi@pve, its privilege-separated token and the ACLs for
    both. A fresh server has none of them (its state lives in memory), so this runs once per
    server start; returns the token's secret."""
    from components import pve_rights

    privs = ",".join(pve_rights.ROLE_PRIVILEGES)
    user, _, name = STACK_TOKEN_ID.partition("!")
    _api_call(url, ca_file, root_token, "POST", "/access/roles", {"roleid": pve_rights.ROLE, "privs": privs})
    # the HA options' role, made as docs/permissions.md says but not granted: only a stack that sets
    # ha.shutdownPolicy, ha.crs or ha.rebalanceOnStart needs it (tests/integration/test_ha_options.py grants it)
    _api_call(url, ca_file, root_token, "POST", "/access/roles", {"roleid": pve_rights.OPTIONS_ROLE, "privs": ",".join(pve_rights.OPTIONS_PRIVILEGES)})
    _api_call(url, ca_file, root_token, "POST", "/access/users", {"userid": user})
    made = _api_call(url, ca_file, root_token, "POST", f"/access/users/{user}/token/{name}", {"privsep": 1})
    acls = [(path, propagate, pve_rights.ROLE) for path, propagate in STACK_ACLS] + [(*STACK_POOL_ACL, pve_rights.POOL_ROLE)]
    for path, propagate, role in acls:
        fields = {"path": path, "users": user, "tokens": STACK_TOKEN_ID, "roles": role, "propagate": propagate}
        _api_call(url, ca_file, root_token, "PUT", "/access/acl", fields)
    return str(made["value"])


def info(state_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """What start() returned (the "pve" part of lab.json)."""
    return json.loads(_paths(_state_dir(state_dir))["info"].read_text())


def start(
    lab_state: dict[str, Any] | None = None,
    *,
    state_dir: str | os.PathLike[str] | None = None,
    nodes: dict[str, str] | None = None,
    control: tuple[str, int] | None = None,
    mode: str | None = None,
    time_scale: float | None = None,
    fake_ceph: bool | None = None,
    lock_wait: float | None = None,
    restart: bool = False,
) -> dict[str, Any]:
    """Start the PVE API detached (reusing a running one unless RESTART) and wait until every
    node answers; returns the "pve" entry of lab.json.

    lab_state["ceph"] (fsid, monitors, conf, admin_keyring) tells it the lab's Ceph; with no
    Ceph (fake_ceph, or no lab_state) RBD storages stay inactive and VM disks cannot be made."""
    lab_state = lab_state or {}
    state = _state_dir(state_dir)
    p = _paths(state)
    nodes = dict(nodes or NODES)
    control = control or CONTROL
    mode = mode or os.environ.get("LAB_PVE_MODE") or "rules"
    if mode not in MODES:
        raise ValueError(f"LAB_PVE_MODE must be one of {', '.join(MODES)} (got {mode!r})")
    if time_scale is None:
        time_scale = float(os.environ.get("LAB_TIME_SCALE") or DEFAULT_TIME_SCALE)
    if lock_wait is None:
        lock_wait = float(os.environ.get("LAB_PVE_LOCK_WAIT") or 90)
    ceph = lab_state.get("ceph") or {}
    if fake_ceph is None:
        fake_ceph = not ceph

    if not restart and procs.read_pid(p["pid"]) is not None and p["info"].exists():
        current = json.loads(p["info"].read_text())
        if current.get("nodes", {}) and {n: v["address"] for n, v in current["nodes"].items()} == nodes and _healthy(current):
            return current
    stop(state_dir=state)

    p["dir"].mkdir(parents=True, exist_ok=True)
    os.chmod(p["dir"], 0o700)
    from lab.pve.tls import make_certs  # needs cryptography: only here, not for the shims

    certs = make_certs(p["dir"] / "tls", [*nodes.values(), *nodes])
    certs["ca_bundle"] = _ca_bundle(Path(certs["ca_file"]))
    previous = {}
    if p["config"].exists():
        try:
            previous = json.loads(p["config"].read_text())
        except ValueError:
            previous = {}
    config = {
        "state_dir": str(p["dir"]),
        "pids_dir": str(p["pids"]),
        "nodes": nodes,
        "port": API_PORT,
        "control_host": control[0],
        "control_port": control[1],
        "token_id": TOKEN_ID,
        "token_secret": previous.get("token_secret") or str(uuid.uuid4()),
        "password": previous.get("password") or secrets.token_urlsafe(18),
        "mode": mode,
        "time_scale": time_scale,
        "lock_wait": lock_wait,
        "fake_ceph": bool(fake_ceph),
        "isos": dict(ISOS),
        "imports": imports.make(p["dir"] / "import"),
        # a `poweroff` typed on a node (the shim) also stops that node's sshd: only in the lab
        # whose sshd runs on these nodes' addresses
        "manage_sshd": bool(lab_state.get("ssh")) and nodes == NODES,
        "ceph": {k: ceph.get(k) for k in ("fsid", "monitors", "conf", "admin_keyring")},
        **{k: certs[k] for k in ("cert_file", "key_file")},
    }
    _write_private(p["config"], config)

    p["pids"].mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CEPH_")}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(os.devnull, "rb") as devnull, open(p["log"], "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lab.pve.server", "--config", str(p["config"])],
            stdin=devnull,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(ROOT),
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    proc.returncode = 0  # detached: nobody waits for it here
    procs.write_pid(p["pid"], proc.pid)

    endpoints = {n: f"https://{addr}:{API_PORT}" for n, addr in nodes.items()}
    token = f"{TOKEN_ID}={config['token_secret']}"
    ctl = Control(f"http://{control[0]}:{control[1]}")
    end = time.monotonic() + START_DEADLINE
    while True:
        if not procs.alive(proc.pid):
            raise RuntimeError(f"the lab PVE API exited at start; see {p['log']}:\n" + _tail(p["log"]))
        if ctl.ping() and all(_api_up(url, certs["ca_file"], token) for url in endpoints.values()):
            break
        if time.monotonic() > end:
            raise RuntimeError(f"the lab PVE API did not answer within {START_DEADLINE:.0f}s; see {p['log']}:\n" + _tail(p["log"]))
        time.sleep(0.2)

    stack_token = grant_stack_token(endpoints[next(iter(nodes))], certs["ca_file"], token)
    result = {
        "nodes": {n: {"address": addr, "api": endpoints[n]} for n, addr in nodes.items()},
        "endpoint": endpoints[next(iter(nodes))],
        "endpoints": list(endpoints.values()),
        "token_id": TOKEN_ID,
        "token_secret": config["token_secret"],
        # the stacks' token: PulumiCephHA on the documented paths (grant_stack_token)
        "stack_token_id": STACK_TOKEN_ID,
        "stack_token_secret": stack_token,
        "user": "root@pam",
        "password": config["password"],
        "ca_file": certs["ca_file"],
        "ca_bundle": certs["ca_bundle"],
        "fingerprint": certs["fingerprint"],
        "insecure": False,
        "mode": mode,
        "version": "9.0.10" if mode == "rules" else "8.4.1",
        "time_scale": time_scale,
        "control": f"http://{control[0]}:{control[1]}",
        "pid": proc.pid,
        "log": str(p["log"]),
        "calls": str(p["calls"]),
        "ceph_backed": not fake_ceph,
        "fakepve": _fakepve_version(),
    }
    _write_private(p["info"], result)
    return result


SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def _ca_bundle(ca_file: Path) -> str:
    """The system's CAs plus the lab's: for clients that only read SSL_CERT_FILE (Go, so the
    proxmoxve provider plugin, which has no CA option: SSL_CERT_FILE=<ca_bundle>)."""
    bundle = ca_file.with_name("ca-bundle.pem")
    system = SYSTEM_CA_BUNDLE.read_text() if SYSTEM_CA_BUNDLE.is_file() else ""
    bundle.write_text(system.rstrip("\n") + "\n" + ca_file.read_text() if system else ca_file.read_text())
    return str(bundle)


def _fakepve_version() -> str:
    try:
        from importlib import metadata

        return metadata.version("fakepve")
    except Exception:
        return "unknown"


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop(*, state_dir: str | os.PathLike[str] | None = None) -> None:
    """Stop the API (it releases its VMs' locks), then any VM process still recorded."""
    p = _paths(_state_dir(state_dir))
    procs.stop_pidfile(p["pid"], deadline=20.0)
    if p["pids"].is_dir():
        for pidfile in sorted(p["pids"].glob("pve-holder-*.pid")):
            procs.stop_pidfile(pidfile, deadline=5.0)


def fault(node: str, action: str, *, state_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """poweroff | isolate | restore NODE: its API address stops (or starts again) answering,
    it leaves (or rejoins) the cluster; a poweroff kills its VMs' processes outright."""
    if node not in NODES and state_dir is None:
        raise ValueError(f"unknown node {node!r}: use one of {', '.join(NODES)}")
    return Control(info(state_dir)["control"]).fault(node, action)


def calls(since: float | None = None, *, agent: str | None = None, state_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """The API calls the lab served (oldest first), at or after SINCE (epoch seconds, e.g. a
    `time.time()` taken before the run), from clients whose User-Agent contains AGENT (the
    proxmoxve plugin: "Go-http-client"). Each is a dict: t, node, method, path, query (names),
    status, kind, ua, ms, msg (see calllog.py)."""
    return calllog.read(_paths(_state_dir(state_dir))["calls"], since=since, agent=agent)


def unmodelled(since: float | None = None, *, agent: str | None = None, state_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """The calls (as readable lines) whose answer was not PVE's: a method the lab does not
    model (501, kind `unmodelled`) or an exception in the lab (500, kind `lab-fault`). A test
    of a client's whole run asserts this is empty."""
    return [calllog.line(c) for c in calls(since, agent=agent, state_dir=state_dir) if c.get("kind") in calllog.NOT_PVE]
