"""Runbook 7-2: force the VM's node down, by one of four methods, and bring it back where one can.

- ``poweroff``: ``poweroff`` on the node over SSH (the runbook's command);
- ``isolate``: over SSH, firewall rules that drop the node's traffic with its cluster and storage
  peers, scheduled to remove themselves first (a systemd timer, else a background ``sleep``), so
  a node never stays cut off;
- ``lab``: the lab's fault control channel (HTTP, ``POST /fault``), ``--fault poweroff|isolate``;
- ``manual``: the operator pulls the plug; the drill only watches.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from clients.ssh import Connection, RemoteError, SshExecutor
from drill.plan import Plan
from drill.sources import Cluster

METHODS = ("poweroff", "isolate", "lab", "manual")
LAB_FAULTS = ("poweroff", "isolate")
CHAIN = "PVECEPH_DRILL"


class FaultError(Exception):
    """The failure could not be injected (or undone); the message says why and what to do."""


@dataclass(frozen=True)
class Fault:
    method: str  # poweroff | isolate | lab | manual
    lab_fault: str = "poweroff"  # for lab: poweroff | isolate
    isolate_seconds: int = 300
    isolate_nets: tuple[str, ...] = ()  # extra networks to cut (isolate)

    @property
    def kind(self) -> str:
        """What happens to the node: poweroff or isolate (manual: whatever the operator does)."""
        if self.method == "lab":
            return self.lab_fault
        return self.method


# ---------------------------------------------------------------------- SSH


def _ssh(cluster: Cluster, node: str) -> SshExecutor:
    spec = cluster.nodes.get(node)
    if spec is None or not spec.ssh_host:
        raise FaultError(f"no SSH address for {node}: give --node-ssh {node}=HOST[:PORT] (or proxmox.nodes in the stack config)")
    files = {}
    for what, path in (("--ssh-key", cluster.ssh_key_file), ("--known-hosts", cluster.known_hosts_file)):
        try:
            files[what] = Path(path or "").expanduser().read_text()
        except OSError as exc:
            raise FaultError(f"{what} {path}: {exc.strerror}") from None
    return SshExecutor(Connection(spec.ssh_host, spec.ssh_port, cluster.ssh_user, files["--ssh-key"], files["--known-hosts"]), connect_timeout=10)


def _run(executor: SshExecutor, argv: list[str], what: str, stdin: str | None = None, timeout: float = 30) -> str:
    try:
        result = executor.run(argv, stdin=stdin, timeout=timeout)
    except RemoteError as exc:
        raise FaultError(str(exc)) from None
    if result.exit_status != 0:
        detail = (result.stderr.strip() or result.stdout.strip())[-300:]
        raise FaultError(f"{what} on {executor.connection.where} failed (exit {result.exit_status})" + (f": {detail}" if detail else ""))
    return result.stdout


def _session_lost(message: str) -> bool:
    """The session broke after the command started (clients.ssh's words), not before."""
    return "connection dropped" in message or "did not finish" in message


def peers(plan: Plan, fault: Fault) -> list[str]:
    """What isolate cuts the node off from: the other nodes' cluster addresses, the Ceph monitors, and --isolate-net."""
    wanted = [ip for name, ip in sorted(plan.node_ips.items()) if name != plan.target] + plan.monitors + list(fault.isolate_nets)
    out = []
    for value in wanted:
        try:
            net = str(ipaddress.ip_network(value, strict=False))
        except ValueError:
            continue  # a monitor given by host name: iptables would resolve it once; give its address with --isolate-net
        if net not in out:
            out.append(net)
    return out


def isolate_script(nets: list[str], seconds: int, stamp: int) -> str:
    """A POSIX sh script for the node: schedule the heal, then drop traffic with NETS (loopback spared).

    The heal is scheduled *before* any rule exists, so a session that dies with the rules still
    ends with the rules removed after SECONDS."""
    if not nets:
        raise FaultError("isolate: no peer address to cut the node off from (no other node address, no monitor): give --isolate-net CIDR")
    if not 10 <= seconds <= 3600:
        raise FaultError(f"--isolate-seconds {seconds}: must be between 10 and 3600")
    lines = [
        "#!/bin/sh",
        f"# pve-ceph-ha drill: cut this node off from its cluster and storage peers for {seconds} s; the rules remove themselves.",
        "set -eu",
    ]
    heal = []
    for tool in ("iptables", "ip6tables"):
        heal += [f"{tool} -D INPUT -j {CHAIN}_IN", f"{tool} -D OUTPUT -j {CHAIN}_OUT"]
        heal += [f"{tool} -F {CHAIN}_{d}; {tool} -X {CHAIN}_{d}" for d in ("IN", "OUT")]
    heal_cmd = "; ".join(f"{c} 2>/dev/null" for c in heal) + "; true"
    unit = f"pveceph-drill-heal-{stamp}"
    lines += [
        f"heal={shlex.quote(heal_cmd)}",
        "# 1. the heal first: whatever happens to this session, the rules go away",
        "if command -v systemd-run >/dev/null 2>&1; then",
        f'  systemd-run --quiet --unit={unit} --on-active={seconds}s /bin/sh -c "$heal"',
        "else",
        f'  nohup /bin/sh -c "sleep {seconds}; $heal" >/dev/null 2>&1 &',
        "fi",
        "# 2. a clean slate, then the rules",
        '/bin/sh -c "$heal"',
    ]
    for tool, version in (("iptables", 4), ("ip6tables", 6)):
        mine = [n for n in nets if ipaddress.ip_network(n).version == version]
        if not mine:
            continue
        lines += [f"{tool} -N {CHAIN}_IN", f"{tool} -N {CHAIN}_OUT"]
        for net in mine:
            lines += [f"{tool} -A {CHAIN}_IN ! -i lo -s {net} -j DROP", f"{tool} -A {CHAIN}_OUT ! -o lo -d {net} -j DROP"]
        lines += [f"{tool} -I INPUT 1 -j {CHAIN}_IN", f"{tool} -I OUTPUT 1 -j {CHAIN}_OUT"]
    lines.append(f"echo isolated for {seconds} s")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- the lab's control channel


def lab_fault(url: str, node: str, action: str, timeout: float = 30) -> dict:
    """POST /fault {node, action, sshd: true} on the lab's control channel (what lab/pve/control.py sends)."""
    body = json.dumps({"node": node, "action": action, "sshd": True}).encode()
    request = urllib.request.Request(url.rstrip("/") + "/fault", data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return (json.loads(response.read() or b"{}") or {}).get("data") or {}
    except urllib.error.HTTPError as exc:
        try:
            reason = (json.loads(exc.read() or b"{}") or {}).get("error") or f"HTTP {exc.code}"
        except ValueError:
            reason = f"HTTP {exc.code}"
        raise FaultError(f"lab control channel {url}: {action} {node} refused: {reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise FaultError(f"lab control channel {url} unreachable: {getattr(exc, 'reason', exc)}") from None


# ---------------------------------------------------------------------- the drill's steps


def check(cluster: Cluster, plan: Plan, fault: Fault) -> list[str]:
    """What the method itself needs (SSH that works, iptables on the node, the control channel)."""
    if plan.target is None:
        return []
    try:
        if fault.method in ("poweroff", "isolate"):
            executor = _ssh(cluster, plan.target)
            _run(executor, ["true"], "a test command", timeout=20)
            if fault.method == "isolate":
                have = _run(executor, ["sh", "-c", "command -v iptables || true"], "command -v iptables")
                if not have.strip():
                    return [f"{plan.target} has no iptables: isolate needs it (in the lab use --method lab --fault isolate)"]
                if not peers(plan, fault):
                    return ["isolate: no peer address to cut the node off from: give --isolate-net CIDR"]
        elif fault.method == "lab":
            if not cluster.control:
                return ["--method lab needs the lab's control channel: give --control URL or --lab-file .lab/lab.json"]
            if fault.lab_fault not in LAB_FAULTS:
                return [f"--fault {fault.lab_fault}: use one of {', '.join(LAB_FAULTS)}"]
    except FaultError as exc:
        return [str(exc)]
    return []


def describe(plan: Plan, fault: Fault) -> str:
    node = plan.target
    return {
        "poweroff": f"`poweroff` on {node} over SSH",
        "isolate": f"cut {node} off from {', '.join(peers(plan, fault)) or '?'} for {fault.isolate_seconds} s (iptables over SSH, removes itself)",
        "lab": f"the lab's {fault.lab_fault} fault on {node} (control channel)",
        "manual": f"you power {node} off or unplug its network; the drill only watches",
    }[fault.method]


def inject(cluster: Cluster, plan: Plan, fault: Fault) -> str:
    """Do it; returns what was done. A dropped SSH session during ``poweroff`` is the node going down."""
    node = plan.target or ""
    if fault.method == "poweroff":
        executor = _ssh(cluster, node)
        try:
            result = executor.run(["poweroff"], timeout=20)
        except RemoteError as exc:
            if not _session_lost(str(exc)):
                raise FaultError(f"{exc}; nothing was done") from None
            return f"poweroff sent to {node} (the SSH session ended with the node going down)"
        if result.exit_status not in (0, -1):
            detail = (result.stderr.strip() or result.stdout.strip())[-300:]
            raise FaultError(f"`poweroff` on {node} failed (exit {result.exit_status}): {detail}; nothing was changed, check the node")
        return f"poweroff sent to {node}"
    if fault.method == "isolate":
        script = isolate_script(peers(plan, fault), fault.isolate_seconds, int(time.time()))
        try:
            _run(_ssh(cluster, node), ["sh", "-s"], "the isolate script", stdin=script, timeout=30)
        except FaultError as exc:
            if not _session_lost(str(exc)):
                raise
            return f"{node} isolated (the SSH session was cut with it); the rules remove themselves after {fault.isolate_seconds} s"
        return f"{node} isolated; the rules remove themselves after {fault.isolate_seconds} s"
    if fault.method == "lab":
        lab_fault(cluster.control or "", node, fault.lab_fault)
        return f"lab fault {fault.lab_fault} on {node}"
    return f"waiting for you to take {node} down (power it off or unplug its cluster and storage network)"


def restore(cluster: Cluster, plan: Plan, fault: Fault) -> tuple[bool, str]:
    """Bring the node back where the method can; otherwise say what the operator must do."""
    node = plan.target or ""
    if fault.method == "lab":
        try:
            lab_fault(cluster.control or "", node, "restore")
        except FaultError as exc:
            return False, f"{exc}; restore it by hand: python -m lab fault {node} restore"
        return True, f"{node} restored (lab control channel)"
    if fault.method == "isolate":
        return (
            False,
            f"{node}: the firewall rules remove themselves {fault.isolate_seconds} s after the injection (or at its watchdog reset); then check `ha-manager status`",
        )
    if fault.method == "poweroff":
        return False, f"{node} is powered off: power it on (IPMI/iLO/iDRAC or its power button), then check `ha-manager status` shows it online"
    return False, f"Bring {node} back (power or network), then check `ha-manager status` shows it online"
