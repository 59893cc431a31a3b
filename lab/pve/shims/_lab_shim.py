"""The PVE node commands of the lab: what `systemctl`, `ha-manager`, `qm`, `apt-get`/`apt`,
`dpkg`/`dpkg-query`, `pveversion`, `poweroff` and `ip` answer on an emulated node. lab/dispatch puts this
directory first on PATH for SSH sessions to a node's address and sets PVE_LAB_NODE; the PVE
commands ask the lab PVE's control channel (control.py, standard library only) for that node's view.

Units: `systemctl start|stop|restart|try-restart UNIT` changes that node's unit in the lab PVE
(units.py; a stopped pve-ha-lrm or pve-ha-crm is what PVE's HA stack sees, ha/), and
is-active/status show it; a powered-off node's units are all inactive, powering it on again starts
them all.

Network: `ip` is the host's iproute2 (a lab node shares the host's loopback network), its JSON
`ip -j link` / `ip -j addr` with the node's per-interface overrides (mtu, master) from
$LAB_STATE_DIR/nodes/<node>/network.json (`python -m lab node-net`); see the ip section.

Packages: a lab node has the host's packages, except those removed on that node. `apt-get
remove|purge ceph-common` (or `dpkg -r|-P`) records the removal for that node only, in
$LAB_STATE_DIR/nodes/<node>/packages.json; `apt-get install ceph-common` puts it back (refused if
the host itself lacks it); `dpkg-query` answers from the node's view. Nothing here ever changes the
host's own packages.

Output and exit codes follow the real tools (PVE 8/9 on Debian 12) for what the runbook and
the project use; anything else is refused with a clear message.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # lab/pve: control.py
from control import Control, ControlError  # noqa: E402, F401  (ControlError: for the command modules)

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


def main(prog: str) -> int:
    """Run PROG as the node's command; each command's module loads only for its own command."""
    args = sys.argv[1:]
    if prog in ("reboot", "shutdown"):
        import _pve_commands

        return _pve_commands.graceful(args, prog)
    if prog in ("systemctl", "ha-manager", "qm", "poweroff", "pveversion"):
        import _pve_commands

        run = {
            "systemctl": _pve_commands.systemctl,
            "ha-manager": _pve_commands.ha_manager,
            "qm": _pve_commands.qm,
            "poweroff": _pve_commands.poweroff,
            "pveversion": _pve_commands.pveversion,
        }
        return run[prog](args)
    if prog in ("apt-get", "apt", "dpkg-query", "dpkg"):
        import _packages

        if prog in ("apt-get", "apt"):
            return _packages.apt(args, prog)
        return _packages.dpkg_query(args) if prog == "dpkg-query" else _packages.dpkg(args)
    if prog == "ip":
        import _ip

        return _ip.ip(args)
    return err(f"lab shim: unknown command {prog}", 127)
