"""The local lab: real Ceph, one sshd per node address and the PVE API, on loopback only.

Python API (the CLI is `python -m lab up|down|status|fault NODE ACTION|ssh-fault ...|calls|node-net ...`,
see `python -m lab --help`):

    up() -> dict       bring everything up (idempotent), write .lab/lab.json, return its content
    down()             stop every process the lab started, remove .lab/
    status() -> dict   Ceph health, each daemon alive or not, each listener
    load() -> dict     read .lab/lab.json
    fault(node, action)   poweroff | isolate | restore a PVE node
    set_node_link(node, ifname, mtu=None, master=None)   what `ip -j link|addr` shows on a PVE
                       node for one interface (mtu; master: its bridge, "" for none); the node's
                       $LAB_STATE_DIR/nodes/<node>/network.json (lab/node_network.py)
    reset_node_net(node=None)   remove those overrides (of every node with None)
    node_net(node) -> dict      a node's overrides: {ifname: {"mtu": n, "master": "vmbr0"}}

`up()` and `down()` clear the nodes' network overrides; `up()` also starts again every systemd
unit a test stopped on a powered node (`systemctl stop pve-ha-lrm` on a node, lab/pve/units.py).

Every daemon is started detached with `spawn()`, its pid recorded in `.lab/pids/<name>.pid`;
`down()` stops whatever has a pid file there (with its descendants), so `lab.pve` can use
`spawn()` too.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lab import paths

__all__ = ["LabError", "down", "fault", "load", "node_net", "reset_node_net", "running", "set_node_link", "spawn", "status", "stop", "up"]

FAULT_ACTIONS = ("poweroff", "isolate", "restore")


class LabError(RuntimeError):
    """The lab cannot do what was asked; the message says why."""


# --------------------------------------------------------------------------- output


def say(msg: str) -> None:
    print(msg, flush=True)


@contextlib.contextmanager
def step(what: str, log: Callable[[str], None] = say):
    """Log `what` with the seconds it took."""
    t0 = time.monotonic()
    yield
    log(f"  {what:<48} {time.monotonic() - t0:6.1f}s")


# --------------------------------------------------------------------------- processes


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat from the state on (field 3 at index 0), or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _start_time(pid: int) -> str | None:
    st = _proc_stat(pid)
    return st[19] if st else None  # field 22: starttime


def alive(pid: int) -> bool:
    """True if PID runs (a zombie is not running: it is reaped when it is our child)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    st = _proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def spawn(
    name: str,
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    log: Path | None = None,
) -> int:
    """Start ARGV detached (own session, stdin /dev/null, output to .lab/logs/NAME.log).

    The pid goes to .lab/pids/NAME.pid (line 1: pid, line 2: its start time, which guards
    against pid reuse); returns the pid."""
    paths.PIDS.mkdir(parents=True, exist_ok=True)
    paths.LOGS.mkdir(parents=True, exist_ok=True)
    log = log or paths.LOGS / f"{name}.log"
    with open(os.devnull, "rb") as devnull, open(log, "ab") as out:
        proc = subprocess.Popen(
            [os.fspath(a) for a in argv],
            stdin=devnull,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    # Popen keeps no reference we need: alive() reaps it when it exits while we run.
    proc.returncode = 0  # keep subprocess from tracking it in its _active list
    write_pid(paths.pid_file(name), proc.pid)
    return proc.pid


def write_pid(path: Path, pid: int) -> None:
    """Record PID in PATH (line 1: the pid, line 2: its start time, which guards against pid reuse)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{pid}\n{_start_time(pid) or ''}\n")
    tmp.replace(path)


def running(name: str) -> int | None:
    """The pid recorded for NAME if that process still runs (and is the same process)."""
    return read_pid(paths.pid_file(name))


def read_pid(path: Path) -> int | None:
    """The pid recorded in PATH if that process still runs (and is the same process)."""
    try:
        lines = path.read_text().split()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    if not alive(pid):
        return None
    if len(lines) > 1 and _start_time(pid) != lines[1]:
        return None  # the pid was reused by another process
    return pid


def recorded() -> list[str]:
    """Names of every pid file in .lab/pids/."""
    return sorted(p.stem for p in paths.PIDS.glob("*.pid")) if paths.PIDS.is_dir() else []


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        st = _proc_stat(int(d.name))
        if st:
            kids.setdefault(int(st[1]), []).append(int(d.name))
    return kids


def descendants(pid: int, kids: dict[int, list[int]] | None = None) -> list[int]:
    kids = kids if kids is not None else _children_map()
    out, todo = [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _self_and_ancestors() -> set[int]:
    mine, pid = set(), os.getpid()
    while pid > 1 and pid not in mine:
        mine.add(pid)
        st = _proc_stat(pid)
        if not st:
            break
        pid = int(st[1])
    return mine


def kill_all(pids: Iterable[int], deadline: float = 10.0, spare: set[int] | None = None) -> list[int]:
    """SIGTERM PIDS, SIGKILL what still runs after DEADLINE seconds; returns the pids that
    were running. Never signals SPARE (default: this process and its ancestors)."""
    spared = _self_and_ancestors() if spare is None else spare
    targets = [p for p in dict.fromkeys(pids) if p not in spared and alive(p)]
    for p in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGTERM)
    end = time.monotonic() + deadline
    while time.monotonic() < end and any(alive(p) for p in targets):
        time.sleep(0.05)
    left = [p for p in targets if alive(p)]
    for p in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    end = time.monotonic() + 5
    while time.monotonic() < end and any(alive(p) for p in left):
        time.sleep(0.05)
    return targets


def stop(name: str, deadline: float = 10.0, tree: bool = True) -> bool:
    """Stop the process recorded as NAME (and its descendants); remove its pid file."""
    pid = running(name)
    if pid is not None:
        # Called from a session of this very daemon (a node's `poweroff` over ssh): stop the
        # daemon, spare the caller's own chain of processes (they end with the session).
        kill_all([pid, *(descendants(pid) if tree else [])], deadline, spare=_self_and_ancestors() - {pid})
    if pid is not None and alive(pid):
        raise LabError(f"{name} (pid {pid}) is still running")
    paths.pid_file(name).unlink(missing_ok=True)
    return pid is not None


def wait_for(what: str, check: Callable[[], Any], deadline: float, interval: float = 0.25) -> Any:
    """Poll CHECK until it returns something truthy; LabError after DEADLINE seconds."""
    end = time.monotonic() + deadline
    last: Any = None
    while True:
        try:
            last = check()
        except LabError:
            raise
        except Exception as e:  # a failed poll is retried until the deadline
            last = e
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() > end:
            raise LabError(f"timed out after {deadline:.0f}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout):
        return True
    return False


def listeners() -> list[dict[str, Any]]:
    """TCP listeners on 127.10.0.0/16 (the lab's addresses) from `ss -ltnpH`."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        cols = line.split()
        if len(cols) < 4:
            continue
        local = cols[3]
        host, _, port = local.rpartition(":")
        if not host.startswith("127.10."):
            continue
        found.append({"address": host, "port": int(port), "process": " ".join(cols[5:])})
    return sorted(found, key=lambda d: (d["address"], d["port"]))


# --------------------------------------------------------------------------- lab.pve


def _pve(required: bool = False):
    """The `lab.pve` module if it exists and has start/stop/fault, else None."""
    try:
        spec = importlib.util.find_spec("lab.pve")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        if required:
            raise LabError("lab.pve is missing: the PVE API emulation is not installed in lab/pve/")
        return None
    return importlib.import_module("lab.pve")


# --------------------------------------------------------------------------- API


def load() -> dict[str, Any]:
    """The lab's endpoints and credentials, as `up()` wrote them to .lab/lab.json."""
    try:
        return json.loads(paths.LAB_JSON.read_text())
    except FileNotFoundError:
        raise LabError(f"{paths.LAB_JSON} does not exist: run `python -m lab up`") from None


def _write_json(data: dict[str, Any]) -> None:
    paths.STATE.mkdir(parents=True, exist_ok=True)
    tmp = paths.LAB_JSON.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")
    os.chmod(tmp, 0o600)
    tmp.replace(paths.LAB_JSON)


def up(log: Callable[[str], None] = say, pve: bool = True) -> dict[str, Any]:
    """Bring the lab up (reusing what already runs); write and return .lab/lab.json.

    pve=False leaves out the PVE API (Ceph and sshd only)."""
    from lab import ceph, sshd

    t0 = time.monotonic()
    log(f"lab up: state in {paths.STATE}")
    paths.STATE.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.STATE, 0o700)
    reset_node_net()  # no override left over: `ip` on a node shows the host's values

    # sshd is quick and independent of Ceph: bring it up while Ceph boots.
    ssh_result: dict[str, Any] = {}

    def _ssh() -> None:
        try:
            ssh_result["info"] = sshd.up(log)
        except BaseException as e:  # re-raised in the main thread
            ssh_result["error"] = e

    th = threading.Thread(target=_ssh, name="lab-sshd")
    th.start()
    try:
        ceph_info = ceph.up(log)
    finally:
        th.join()
    if "error" in ssh_result:
        raise ssh_result["error"]
    state: dict[str, Any] = {"ceph": ceph_info, "ssh": ssh_result["info"]}
    from lab import rgw

    state["rgw"] = rgw.up(log)  # Pulumi's state on the cluster's own object store (issue #21)
    with step("HEALTH_OK, all PGs active+clean (the gateway's pools too)", log):
        ceph.wait_healthy()  # a pool just made has its PG `unknown` until an OSD reports it

    pve_mod = _pve() if pve else None
    if pve_mod is not None and hasattr(pve_mod, "start"):
        with step("PVE API (lab.pve.start)", log):
            state["pve"] = pve_mod.start(json.loads(json.dumps(state)))
            # a reused API keeps its state: every unit a test stopped runs again
            try:
                pve_mod.Control(state["pve"]["control"]).reset_services()
            except pve_mod.ControlError as e:
                log(f"  PVE API: the nodes' units could not be reset: {e}")
    elif pve:
        log("  PVE API: lab.pve.start not found, skipped")

    seconds = round(time.monotonic() - t0, 1)
    state["lab"] = {"root": str(paths.ROOT), "state_dir": str(paths.STATE), "up_seconds": seconds}
    _write_json(state)

    log("endpoints:")
    c, s = state["ceph"], state["ssh"]
    log(f"  ceph monitors   {' '.join(c['monitors'])}  (fsid {c['fsid']})")
    log(f"  ceph conf       {c['conf']}")
    log(f"  admin keyring   {c['admin_keyring']}")
    for role, host in s["hosts"].items():
        log(f"  ssh {role:<11} {s['user']}@{host} -p {s['port']} -i {s['private_key_path']}")
    if "pve" in state:
        log(f"  pve             {json.dumps(state['pve'], default=str)[:300]}")
    r = state["rgw"]
    log(f"  state backend   {r['url']}  (pulumi login; keys in {r['keys_file']}, as AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)")
    log(f"  lab.json        {paths.LAB_JSON}")
    log(f"lab up: done in {seconds:.1f}s")
    return state


def down(log: Callable[[str], None] = say, deadline: float = 10.0) -> None:
    """Stop every process the lab started (by pid, with descendants) and remove .lab/."""
    from lab import ceph, sshd

    t0 = time.monotonic()
    kids = _children_map()
    started = [p for n in recorded() if (p := running(n)) is not None]
    started += [c for p in started for c in descendants(p, kids)]
    pve = _pve()
    if pve is not None and hasattr(pve, "stop"):
        with step("PVE API (lab.pve.stop)", log):
            try:
                pve.stop()
            except Exception as e:  # keep tearing down
                log(f"  lab.pve.stop failed: {e!r} (its processes are stopped by pid)")
    with step("sshd", log):
        sshd.down()
    with step("radosgw", log):
        from lab import rgw

        rgw.down(deadline)
    with step("ceph", log):
        ceph.down(deadline)
    with step("other recorded processes", log):
        kids = _children_map()
        pids: list[int] = []
        for name in recorded():
            pid = running(name)
            if pid is not None:
                pids += [pid, *descendants(pid, kids)]
        pids += _strays()
        kill_all(pids, deadline)
    left = [p for p in _strays() if alive(p)]
    if left:
        raise LabError(f"processes still running after down: {left}")
    # init reaps the orphans' zombies: wait a moment so `ps` shows nothing either
    end = time.monotonic() + 3
    while time.monotonic() < end and any(Path(f"/proc/{p}").exists() for p in started):
        time.sleep(0.05)
    shutil.rmtree(paths.STATE, ignore_errors=True)
    busy = listeners()
    if busy:
        raise LabError(f"listeners left on lab addresses after down: {busy}")
    log(f"lab down: done in {time.monotonic() - t0:.1f}s")


_STRAY_PROGRAMS = {b"ceph-mon", b"ceph-mgr", b"ceph-osd", b"sshd"}


def _strays() -> list[int]:
    """Lab daemons (ceph-mon/mgr/osd, sshd) whose command line names the lab's state dir:
    a pid file was lost, e.g. after a crash of `lab up`."""
    needle = str(paths.STATE).encode()
    spared = _self_and_ancestors()
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) in spared:
            continue
        try:
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        argv0 = cmd.split(b"\0", 1)[0]
        prog = b"sshd" if argv0.startswith(b"sshd: ") else os.path.basename(argv0)  # sshd retitles itself
        if prog in _STRAY_PROGRAMS and needle in cmd and alive(int(d.name)):
            found.append(int(d.name))
    return found


def status() -> dict[str, Any]:
    """Ceph health, each recorded daemon alive or not, each listener on the lab's addresses."""
    from lab import ceph, sshd

    daemons = {}
    expected = [*ceph.daemon_names(), *sshd.daemon_names()] if paths.STATE.exists() else []
    for name in sorted({*expected, *recorded()}):
        pid = running(name)
        daemons[name] = {"pid": pid, "alive": pid is not None}
    return {
        "state_dir": str(paths.STATE),
        "lab_json": paths.LAB_JSON.exists(),
        "ceph": ceph.health(),
        "daemons": daemons,
        "listeners": listeners(),
    }


def fault(node: str, action: str, log: Callable[[str], None] = say) -> Any:
    """Inject a fault into a PVE node: poweroff and isolate stop its sshd (the node no longer
    answers), restore starts it again; lab.pve.fault does the PVE side."""
    from lab import sshd

    if action not in FAULT_ACTIONS:
        raise LabError(f"unknown fault action {action!r}: use one of {', '.join(FAULT_ACTIONS)}")
    if node not in sshd.HOSTS or node == sshd.ADMIN_ROLE:
        nodes = ", ".join(r for r in sshd.HOSTS if r != sshd.ADMIN_ROLE)
        raise LabError(f"unknown node {node!r}: use one of {nodes}")
    pve = _pve(required=True)
    if not hasattr(pve, "fault"):
        raise LabError("lab.pve has no fault(node, action)")
    if action == "restore":
        sshd.start_role(node)
        result = pve.fault(node, action)
    else:
        result = pve.fault(node, action)
        sshd.stop_role(node)
    log(f"fault {node} {action}: done")
    return result


def rss_mb(pids: Iterable[int]) -> float:
    """Resident memory of PIDS in MB (sum of VmRSS)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def daemon_pids() -> dict[str, int]:
    """Running recorded daemons: name -> pid."""
    return {n: p for n in recorded() if (p := running(n)) is not None}


# --------------------------------------------------------------------------- node network


def set_node_link(node: str, ifname: str, mtu: int | None = None, master: str | None = None) -> dict[str, Any]:
    """What `ip -j link` / `ip -j addr` show on PVE node NODE for IFNAME: MTU and/or MASTER (the
    bridge it is a port of; "" for none). None keeps what was set. Returns the override."""
    from lab import node_network

    return node_network.set_node_link(node, ifname, mtu=mtu, master=master)


def reset_node_net(node: str | None = None) -> None:
    """Remove NODE's network overrides (every node's with None)."""
    from lab import node_network

    node_network.reset_node_net(node)


def node_net(node: str) -> dict[str, Any]:
    """NODE's network overrides: {ifname: {"mtu": int, "master": str | None}}."""
    from lab import node_network

    return node_network.node_net(node)
