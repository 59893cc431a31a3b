"""The PVE node commands of the lab: what `systemctl`, `ha-manager`, `qm`, `apt-get`/`apt`,
`pveversion` and `poweroff` answer on an emulated node. lab/dispatch puts this directory first on PATH
for SSH sessions to a node's address and sets PVE_LAB_NODE; every command asks the lab
PVE's control channel (control.py, standard library only) for that node's view.

Output and exit codes follow the real tools (PVE 8/9 on Debian 12) for what the runbook and
the project use; anything else is refused with a clear message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # lab/pve: control.py
from control import Control, ControlError  # noqa: E402

UNITS = {
    "pve-ha-lrm": "PVE Local HA Resource Manager Daemon",
    "pve-ha-crm": "PVE Cluster HA Resource Manager Daemon",
    "pve-cluster": "The Proxmox VE cluster filesystem",
    "corosync": "Corosync Cluster Engine",
    "pvedaemon": "PVE API Daemon",
    "pveproxy": "PVE API Proxy Server",
    "pvestatd": "PVE Status Daemon",
    "watchdog-mux": "Proxmox VE watchdog multiplexer",
}
CEPH_PACKAGES = ("ceph-common",)


def node() -> str:
    name = os.environ.get("PVE_LAB_NODE")
    if not name:
        sys.stderr.write("lab shim: PVE_LAB_NODE is not set (not on a lab PVE node)\n")
        raise SystemExit(1)
    return name


def err(message: str, code: int) -> int:
    sys.stderr.write(message.rstrip("\n") + "\n")
    return code


def control() -> Control:
    return Control(timeout=60)


# ---------------------------------------------------------------------- systemctl


def systemctl(args: list[str]) -> int:
    opts = [a for a in args if a.startswith("-")]
    args = [a for a in args if not a.startswith("-")]
    if not args:
        return err("lab systemctl: only is-active, is-enabled, status, start, stop, restart, reload are emulated", 1)
    verb, units = args[0], [u[:-8] if u.endswith(".service") else u for u in args[1:]]
    quiet = "-q" in opts or "--quiet" in opts
    try:
        state = control().services(node())
    except ControlError as exc:
        return err(f"Failed to connect to bus: {exc}", 1)
    if verb == "is-active":
        code = 0
        for unit in units:
            active = state.get(unit, {}).get("active", "inactive")
            if not quiet:
                print(active)
            if active != "active":
                code = 3
        return code
    if verb == "is-enabled":
        code = 0
        for unit in units:
            known = unit in state
            if not quiet:
                print("enabled" if known else "not-found")
            code = code if known else 4
        return code
    if verb == "status":
        code = 0
        for i, unit in enumerate(units):
            if unit not in state:
                sys.stderr.write(f"Unit {unit}.service could not be found.\n")
                code = 4
                continue
            info = state[unit]
            since = time.localtime(info["since"])
            ago = int(time.time() - info["since"])
            when = time.strftime("%a %Y-%m-%d %H:%M:%S %Z", since)
            dot = "●" if info["active"] == "active" else "○"
            if i:
                print()
            print(f"{dot} {unit}.service - {UNITS.get(unit, unit)}")
            print(f"     Loaded: loaded (/lib/systemd/system/{unit}.service; enabled; preset: enabled)")
            if info["active"] == "active":
                print(f"     Active: active (running) since {when}; {_ago(ago)} ago")
                print(f"   Main PID: {info['pid']} ({unit})")
                print("      Tasks: 1 (limit: 9830)")
                print("     Memory: 90.2M")
                print(f"        CPU: {max(1, ago // 100)}.{ago % 1000:03d}s")
                print(f"     CGroup: /system.slice/{unit}.service")
                print(f"             └─{info['pid']} {unit}")
            else:
                print("     Active: inactive (dead)")
                code = 3
        return code
    if verb in ("start", "stop", "restart", "reload", "enable", "disable", "try-restart", "reload-or-restart"):
        for unit in units:
            if unit not in state:
                return err(f"Failed to {verb} {unit}.service: Unit {unit}.service not found.", 5)
        return 0
    return err(f"lab systemctl: '{verb}' is not emulated on a lab PVE node", 1)


def _ago(secs: int) -> str:
    if secs < 60:
        return f"{secs}s"
    mins, secs = divmod(secs, 60)
    if mins < 60:
        return f"{mins}min {secs}s"
    hours, mins = divmod(mins, 60)
    return f"{hours}h {mins}min"


# ---------------------------------------------------------------------- ha-manager


def _options(args: list[str], flags: tuple[str, ...] = (), valued: tuple[str, ...] | None = None) -> tuple[list[str], dict[str, str]]:
    """Positional arguments and --options. FLAGS take no value; with VALUED given, only those
    options take one (apt's -y, -q, ... are flags)."""
    pos, opts = [], {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--") or (arg.startswith("-") and len(arg) == 2):
            key = arg.lstrip("-")
            takes_value = key.split("=", 1)[0] not in flags and (valued is None or key in valued)
            if "=" in key:
                key, value = key.split("=", 1)
            elif takes_value and i + 1 < len(args) and not args[i + 1].startswith("-"):
                value = args[i + 1]
                i += 1
            else:
                value = "1"
            opts[key.replace("-", "_") if key in ("max-restart", "max-relocate") else key] = value
        else:
            pos.append(arg)
        i += 1
    return pos, opts


def ha_manager(args: list[str]) -> int:
    if not args:
        return err("USAGE: ha-manager <COMMAND> [ARGS] [OPTIONS]\n       ha-manager help", 255)
    cmd, rest = args[0], args[1:]
    pos, opts = _options(rest, flags=("verbose", "v"))
    c = control()
    me = node()
    try:
        if cmd == "status":
            for entry in c.ha_status(me):
                print(f"{entry['type']} {entry['status']}")
            if opts.get("verbose") in ("1", "true") or opts.get("v") == "1":
                print("full cluster state:")
                print(json.dumps(c.call("GET", "/ha/manager_status", query={"node": me}), indent=3, sort_keys=True))
            return 0
        if cmd == "config":
            for rec in sorted(c.ha_resources(), key=lambda r: r["sid"]):
                print(rec["sid"])
                for key in sorted(rec):
                    if key in ("digest", "sid", "type", "errors"):
                        continue
                    print(f"\t{key} {rec[key]}")
                print()
            return 0
        if cmd in ("add", "set", "remove", "migrate", "relocate", "crm-command"):
            if cmd == "crm-command":
                if not pos:
                    return err("400 not enough arguments\nha-manager crm-command <cmd> ...", 255)
                cmd, pos = pos[0], pos[1:]
            if not pos:
                return err(f"400 not enough arguments\nha-manager {cmd} <sid>", 255)
            sid = pos[0]
            params: dict[str, str] = dict(opts)
            if cmd in ("migrate", "relocate"):
                if len(pos) < 2:
                    return err(f"400 not enough arguments\nha-manager {cmd} <sid> <node>", 255)
                params["node"] = pos[1]
            c.ha_command(me, cmd, sid, **params)
            return 0
    except ControlError as exc:
        return err(str(exc), 255)
    return err(f"unknown command 'ha-manager {cmd}'", 255)


# ---------------------------------------------------------------------- qm


def qm(args: list[str]) -> int:
    pos, opts = _options(args, flags=("verbose", "full"))
    if not pos:
        return err("USAGE: qm <COMMAND> [ARGS] [OPTIONS]", 255)
    cmd = pos[0]
    c = control()
    me = node()
    try:
        if cmd == "status":
            if len(pos) < 2:
                return err("400 not enough arguments\nqm status <vmid> [OPTIONS]", 255)
            verbose = opts.get("verbose") in ("1", "true")
            try:
                data = c.qm_status(me, int(pos[1]), verbose)
            except ValueError:
                return err(f"400 Parameter verification failed.\nvmid: type check ('integer') failed - got '{pos[1]}'", 255)
            if verbose:
                for key in sorted(data):
                    value = data[key]
                    if isinstance(value, dict):
                        print(f"{key}:")
                        for sub in sorted(value):
                            print(f"\t{sub}: {value[sub]}")
                    else:
                        print(f"{key}: {value}")
            else:
                print(f"status: {data['status']}")
            return 0
        if cmd == "list":
            vms = c.status()["vms"]
            print(f"{'VMID':>10} {'NAME':<20} {'STATUS':<10} {'MEM(MB)':<10} {'BOOTDISK(GB)':<12} PID       ")
            for vmid in sorted(vms, key=int):
                vm = vms[vmid]
                if vm["node"] != me:
                    continue
                try:
                    data = c.qm_status(me, int(vmid))
                except ControlError:
                    continue
                print(
                    f"{vmid:>10} {data.get('name', ''):<20} {data['status']:<10} "
                    f"{data.get('maxmem', 0) // 1048576:<10} {data.get('maxdisk', 0) / 1073741824:<12.2f} "
                    f"{data.get('pid', 0):<10}"
                )
            return 0
    except ControlError as exc:
        return err(str(exc), 2 if exc.status == 404 else 255)
    return err(f"lab qm: '{cmd}' is not emulated on a lab PVE node (use the API)", 255)


# ---------------------------------------------------------------------- apt-get / apt


def _dpkg_version(package: str) -> str | None:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Status}\t${Version}", package], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    status, _, version = out.stdout.partition("\t")
    return version if status.strip() == "install ok installed" else None


def apt(args: list[str], prog: str) -> int:
    pos, _opts = _options(args, valued=("o", "option", "t", "target-release", "c", "config-file"))
    if not pos:
        return err(f"{prog}: lab shim: give a command (install, update)", 100)
    cmd, packages = pos[0], pos[1:]
    if cmd == "update":
        print("Hit:1 http://deb.debian.org/debian bookworm InRelease")
        print("Hit:2 http://deb.debian.org/debian bookworm-updates InRelease")
        print("Hit:3 http://security.debian.org/debian-security bookworm-security InRelease")
        print("Hit:4 http://download.proxmox.com/debian/pve bookworm InRelease")
        print("Reading package lists... Done")
        return 0
    if cmd != "install":
        return err(f"E: lab shim: '{prog} {cmd}' is not emulated on a lab PVE node (install, update are)", 100)
    node()
    print("Reading package lists... Done")
    print("Building dependency tree... Done")
    print("Reading state information... Done")
    for package in packages:
        version = _dpkg_version(package)
        if version is None:
            if package in CEPH_PACKAGES:
                return err(
                    f"E: {package} is not installed on this machine, so the lab cannot provide it: install it on the host (see lab/pve/apt-packages.txt)", 100
                )
            return err(f"E: Unable to locate package {package}", 100)
        print(f"{package} is already the newest version ({version}).")
    print("0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.")
    return 0


# ---------------------------------------------------------------------- poweroff


def poweroff(args: list[str]) -> int:
    me = node()
    try:
        control().fault(me, "poweroff", sshd=True)
    except ControlError as exc:
        return err(f"Failed to power off system via logind: {exc}", 1)
    return 0


KERNELS = {"8": "6.8.12-9-pve", "9": "6.14.11-2-pve"}
REPOIDS = {"8": "2a5fa54a8503f96d", "9": "c3c7c6d5b2a3e4f1"}  # as the lab API's /version answers


def pveversion(args: list[str]) -> int:
    """``pveversion``: ``pve-manager/<version>/<repoid> (running kernel: <kernel>)``; the lab's mode decides the version."""
    if args:
        return err("lab pveversion: only plain `pveversion` is emulated", 1)
    try:
        version = str(control().status()["version"])
    except ControlError as exc:
        return err(f"ipcc_send_rec[1] failed: {exc}", 255)
    major = version.split(".")[0]
    print(f"pve-manager/{version}/{REPOIDS.get(major, '0000000000000000')} (running kernel: {KERNELS.get(major, '6.8.12-9-pve')})")
    return 0


def main(prog: str) -> int:
    args = sys.argv[1:]
    if prog == "systemctl":
        return systemctl(args)
    if prog == "ha-manager":
        return ha_manager(args)
    if prog == "qm":
        return qm(args)
    if prog in ("apt-get", "apt"):
        return apt(args, prog)
    if prog == "poweroff":
        return poweroff(args)
    if prog == "pveversion":
        return pveversion(args)
    return err(f"lab shim: unknown command {prog}", 127)
