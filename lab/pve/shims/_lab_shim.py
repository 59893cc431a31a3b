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

import json
import os
import shutil
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
    """systemctl as systemd 252 (Debian 12) answers it, for the node's UNITS: is-active,
    is-enabled, status, and start/stop/restart/try-restart, which change the unit's state in the
    lab PVE (units.py; pve-ha-lrm and pve-ha-crm through its HA manager, ha/) and return once
    the job is done, as systemctl does. reload, enable, disable, reload-or-restart answer as
    systemctl would and change nothing."""
    opts = [a for a in args if a.startswith("-")]
    args = [a for a in args if not a.startswith("-")]
    if not args:
        return err("lab systemctl: only is-active, is-enabled, status, start, stop, restart, try-restart, reload are emulated", 1)
    verb, units = args[0], [u[:-8] if u.endswith(".service") else u for u in args[1:]]
    quiet = "-q" in opts or "--quiet" in opts
    try:
        state = control().services(node())
    except ControlError as exc:
        return err(f"Failed to connect to bus: {exc}", 1)
    if verb == "is-active":
        # systemd src/systemctl/systemctl-is-active.c check_unit_generic: one state per unit;
        # exit 0 if ANY unit is active (or reloading), 4 if every unit is unknown, else 3
        # (systemctl(1): "Returns an exit code 0 if at least one is active")
        any_active, all_unknown = False, True
        for unit in units:
            active = state.get(unit, {}).get("active", "inactive")
            if not quiet:
                print(active)
            any_active |= active in ("active", "reloading")
            all_unknown &= unit not in state
        return 0 if any_active else 4 if all_unknown and units else 3
    if verb == "is-enabled":
        code = 0
        for unit in units:
            known = unit in state
            if not quiet:
                print("enabled" if known else "not-found")
            code = code if known else 4
        return code
    if verb == "status":
        return _status(units, state)
    if verb in ("start", "stop", "restart", "try-restart"):
        for unit in units:
            if unit not in state:
                how = "not loaded" if verb == "stop" else "not found"
                return err(f"Failed to {verb} {unit}.service: Unit {unit}.service {how}.", 5)
        if not units:
            return err("Too few arguments.", 1)
        try:
            control().service_action(node(), verb, units)
        except ControlError as exc:
            return err(f"Failed to {verb} {' '.join(u + '.service' for u in units)}: {exc}", 1)
        return 0
    if verb in ("reload", "enable", "disable", "reload-or-restart"):
        for unit in units:
            if unit not in state:
                return err(f"Failed to {verb} {unit}.service: Unit {unit}.service not found.", 5)
        return 0
    return err(f"lab systemctl: '{verb}' is not emulated on a lab PVE node", 1)


def _status(units: list[str], state: dict) -> int:
    """`systemctl status UNIT...` (systemd 252's layout); exit 0 only if every unit runs, 3 if
    one does not, 4 if one is unknown."""
    code = 0
    for i, unit in enumerate(units):
        if unit not in state:
            sys.stderr.write(f"Unit {unit}.service could not be found.\n")
            code = 4
            continue
        info = state[unit]
        active = info["active"]
        ago = max(0, int(time.time() - info["since"]))
        when = time.strftime("%a %Y-%m-%d %H:%M:%S %Z", time.localtime(info["since"]))
        if i:
            print()
        print(f"{'●' if active != 'inactive' else '○'} {unit}.service - {UNITS.get(unit, unit)}")
        print(f"     Loaded: loaded (/lib/systemd/system/{unit}.service; enabled; preset: enabled)")
        if active == "active":
            print(f"     Active: active (running) since {when}; {_ago(ago)} ago")
            print(f"   Main PID: {info['pid']} ({unit})")
            print("      Tasks: 1 (limit: 9830)")
            print("     Memory: 90.2M")
            print(f"        CPU: {max(1, ago // 100)}.{ago % 1000:03d}s")
            print(f"     CGroup: /system.slice/{unit}.service")
            print(f"             └─{info['pid']} {unit}")
            continue
        if active == "deactivating":
            print(f"     Active: deactivating ({info.get('sub') or 'stop'}) since {when}; {_ago(ago)} ago")
            print(f"   Main PID: {info['pid']} ({unit})")
            print(f"     CGroup: /system.slice/{unit}.service")
            print(f"             └─{info['pid']} {unit}")
        else:
            print(f"     Active: inactive (dead) since {when}; {_ago(ago)} ago")
        code = code if code == 4 else 3
    return code


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


# ---------------------------------------------------------------------- packages (this node's dpkg)

REAL_DPKG_QUERY = "/usr/bin/dpkg-query"
REAL_DPKG = "/usr/bin/dpkg"
REMOVED, PURGED = "config-files", "not-installed"  # a node's record of a package removed on it
# dpkg's status fields of a package removed on the node (the rest comes from the host's dpkg)
STATUS_FIELDS = {
    REMOVED: {"Status": "deinstall ok config-files", "db:Status-Abbrev": "rc ", "db:Status-Want": "deinstall", "db:Status-Status": "config-files"},
    PURGED: {"Status": "unknown ok not-installed", "db:Status-Abbrev": "un ", "db:Status-Want": "unknown", "db:Status-Status": "not-installed"},
}


def _packages_file() -> str:
    state = os.environ.get("LAB_STATE_DIR") or os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(HERE))), ".lab")
    return os.path.join(state, "nodes", node(), "packages.json")


def node_packages() -> dict[str, str]:
    """{package: REMOVED | PURGED} for the packages removed on this node."""
    try:
        with open(_packages_file(), encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items() if v in (REMOVED, PURGED)} if isinstance(data, dict) else {}


def _record(package: str, state: str | None) -> None:
    """Record PACKAGE as removed (REMOVED, PURGED) on this node, or as installed again (None)."""
    packages = node_packages()
    if state is None:
        packages.pop(package, None)
    else:
        packages[package] = state
    path = _packages_file()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(packages, handle, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _host_field(package: str, name: str) -> str | None:
    """One dpkg field of PACKAGE as the host has it (None if the host does not have it installed)."""
    try:
        out = subprocess.run([REAL_DPKG_QUERY, "-W", f"-f=${{Status}}\t${{{name}}}", package], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    status, _, value = out.stdout.partition("\t")
    return value if status.strip() == "install ok installed" else None


def _dpkg_version(package: str) -> str | None:
    """The installed version of PACKAGE on this node: the host's, unless it was removed here."""
    if package in node_packages():
        return None
    return _host_field(package, "Version")


def _expand_flags(args: list[str]) -> list[str]:
    """`-yqq` as `-y -q -q` (apt's combined short flags)."""
    out = []
    for arg in args:
        if len(arg) > 2 and arg[0] == "-" and arg[1] != "-" and arg[1:].isalpha() and set(arg[1:]) <= set("yqsdfmbuVh"):
            out.extend(f"-{flag}" for flag in arg[1:])
        else:
            out.append(arg)
    return out


def _confirm(opts: dict[str, str]) -> bool:
    """apt's `Do you want to continue? [Y/n]`: -y answers it; otherwise a line from stdin (EOF aborts)."""
    if any(key in opts for key in ("y", "yes", "assume-yes")):
        return True
    sys.stdout.write("Do you want to continue? [Y/n] ")
    sys.stdout.flush()
    answer = sys.stdin.readline()
    if answer and answer.strip().lower() in ("", "y", "yes"):
        return True
    print("Abort.")
    return False


def apt(args: list[str], prog: str) -> int:
    pos, opts = _options(_expand_flags(args), valued=("o", "option", "t", "target-release", "c", "config-file"))
    if not pos:
        return err(f"{prog}: lab shim: give a command (install, remove, purge, update)", 100)
    cmd, packages = pos[0], pos[1:]
    if cmd == "update":
        print("Hit:1 http://deb.debian.org/debian bookworm InRelease")
        print("Hit:2 http://deb.debian.org/debian bookworm-updates InRelease")
        print("Hit:3 http://security.debian.org/debian-security bookworm-security InRelease")
        print("Hit:4 http://download.proxmox.com/debian/pve bookworm InRelease")
        print("Reading package lists... Done")
        return 0
    if cmd == "remove" and ("purge" in opts):
        cmd = "purge"
    if cmd not in ("install", "remove", "purge"):
        return err(f"E: lab shim: '{prog} {cmd}' is not emulated on a lab PVE node (install, remove, purge, update are)", 100)
    node()
    print("Reading package lists... Done")
    print("Building dependency tree... Done")
    print("Reading state information... Done")
    if cmd == "install":
        return _apt_install(packages, opts)
    return _apt_remove(packages, opts, purge=cmd == "purge")


def _apt_install(packages: list[str], opts: dict[str, str]) -> int:
    new: list[tuple[str, str]] = []
    for package in packages:
        host_version = _host_field(package, "Version")
        if host_version is None:
            if package in CEPH_PACKAGES:
                return err(
                    f"E: {package} is not installed on this machine, so the lab cannot provide it: install it on the host (see lab/pve/apt-packages.txt)", 100
                )
            return err(f"E: Unable to locate package {package}", 100)
        if package in node_packages():
            new.append((package, host_version))
        else:
            print(f"{package} is already the newest version ({host_version}).")
    if not new:
        print("0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.")
        return 0
    print("The following NEW packages will be installed:")
    print("  " + " ".join(package for package, _ in new))
    print(f"0 upgraded, {len(new)} newly installed, 0 to remove and 0 not upgraded.")
    print("Need to get 0 B/25.6 MB of archives.")
    print("After this operation, 98.3 MB of additional disk space will be used.")
    arch = _host_field(new[0][0], "Architecture") or "amd64"
    for package, version in new:
        if node_packages().get(package) == PURGED:
            print(f"Selecting previously unselected package {package}.")
        print("(Reading database ... 61234 files and directories currently installed.)")
        print(f"Preparing to unpack .../{package}_{version}_{arch}.deb ...")
        print(f"Unpacking {package} ({version}) ...")
        _record(package, None)
        print(f"Setting up {package} ({version}) ...")
    print("Processing triggers for man-db (2.11.2-2) ...")
    print("Processing triggers for libc-bin (2.36-9+deb12u7) ...")
    return 0


def _removable(package: str) -> int | None:
    """An exit status refusing to remove PACKAGE on a lab node, or None when it can be."""
    if _host_field(package, "Version") is None:
        return err(f"E: Unable to locate package {package}", 100)
    if package not in CEPH_PACKAGES:
        return err(f"E: lab shim: only {', '.join(CEPH_PACKAGES)} can be removed on a lab PVE node (its other packages are the host's)", 100)
    return None


def _apt_remove(packages: list[str], opts: dict[str, str], purge: bool) -> int:
    going: list[tuple[str, str]] = []
    for package in packages:
        refused = _removable(package)
        if refused is not None:
            return refused
        state = node_packages().get(package)
        if state == PURGED or (state == REMOVED and not purge):
            print(f"Package '{package}' is not installed, so not removed")
        else:
            going.append((package, _host_field(package, "Version") or ""))
    if not going:
        print("0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.")
        return 0
    print("The following packages will be REMOVED:")
    print("  " + " ".join(f"{package}*" if purge else package for package, _ in going))
    removing = sum(1 for package, _ in going if package not in node_packages())
    print(f"0 upgraded, 0 newly installed, {len(going)} to remove and 0 not upgraded.")
    if removing:
        print("After this operation, 98.3 MB disk space will be freed.")
    if not _confirm(opts):
        return 1
    print("(Reading database ... 61234 files and directories currently installed.)")
    for package, version in going:
        if package not in node_packages():
            print(f"Removing {package} ({version}) ...")
        if purge:
            print(f"Purging configuration files for {package} ({version}) ...")
        _record(package, PURGED if purge else REMOVED)
    print("Processing triggers for man-db (2.11.2-2) ...")
    print("Processing triggers for libc-bin (2.36-9+deb12u7) ...")
    return 0


def _render(fmt: str, package: str, fields: dict[str, str]) -> str:
    """dpkg-query's --showformat: ${field} / ${field;width}, and the \\n \\t \\\\ escapes."""
    out, i = [], 0
    while i < len(fmt):
        if fmt.startswith("${", i) and "}" in fmt[i:]:
            end = fmt.index("}", i)
            name, _, width = fmt[i + 2 : end].partition(";")
            value = fields[name] if name in fields else (_host_field(package, name) or "")
            if width.lstrip("-").isdigit():
                value = value.ljust(-int(width)) if width.startswith("-") else value.rjust(int(width))
            out.append(value)
            i = end + 1
        elif fmt[i] == "\\" and i + 1 < len(fmt):
            out.append({"n": "\n", "t": "\t", "\\": "\\", '"': '"'}.get(fmt[i + 1], fmt[i : i + 2]))
            i += 2
        else:
            out.append(fmt[i])
            i += 1
    return "".join(out)


LIST_LINE = "${binary:Package;-14} ${Version;-20} ${Architecture;-12} ${binary:Summary}\n"  # dpkg -l's columns


def dpkg_query(args: list[str]) -> int:
    """`dpkg-query -W [-f FORMAT] PACKAGE...` and `-s PACKAGE...` from this node's view; anything
    else (and packages not removed on this node) goes to the host's dpkg-query."""
    removed = node_packages()
    fmt, mode, names, i = "${binary:Package}\t${Version}\n", None, [], 0
    while i < len(args):
        arg = args[i]
        if arg in ("-W", "--show", "-s", "--status", "-l", "--list"):
            mode = {"-W": "show", "--show": "show", "-s": "status", "--status": "status", "-l": "list", "--list": "list"}[arg]
        elif arg.startswith(("-f=", "--showformat=")):
            fmt = arg.split("=", 1)[1]
        elif arg.startswith("-f") and len(arg) > 2:
            fmt = arg[2:]
        elif arg in ("-f", "--showformat") and i + 1 < len(args):
            fmt, i = args[i + 1], i + 1
        elif arg.startswith("-"):
            mode = "other"
        else:
            names.append(arg)
        i += 1
    if mode not in ("show", "status", "list") or not any(name in removed for name in names):
        os.execv(REAL_DPKG_QUERY, [REAL_DPKG_QUERY, *args])
    code = 0
    if mode == "list":
        print("Desired=Unknown/Install/Remove/Purge/Hold")
        print("| Status=Not/Inst/Conf-files/Unpacked/halF-conf/Half-inst/trig-aWait/Trig-pend")
        print("|/ Err?=(none)/Reinst-required (Status,Err: uppercase=bad)")
        print("||/ Name           Version              Architecture Description")
        print("+++-==============-====================-============-=================================================================")
    host_args = {"show": ["-W", f"-f={fmt}"], "status": ["-s"], "list": ["-W", f"-f=${{db:Status-Abbrev}} {LIST_LINE}"]}[mode]
    for name in names:
        state = removed.get(name)
        if state is None:
            done = subprocess.run([REAL_DPKG_QUERY, *host_args, name], capture_output=True, text=True, timeout=20)
            sys.stdout.write(done.stdout)
            sys.stderr.write(done.stderr)
            code = code or done.returncode
        elif state == PURGED:
            if mode == "status":
                sys.stderr.write(f"dpkg-query: package '{name}' is not installed and no information is available\n")
            else:
                sys.stderr.write(f"dpkg-query: no packages found matching {name}\n")
            code = 1
        elif mode == "show":
            sys.stdout.write(_render(fmt, name, STATUS_FIELDS[state]))
        elif mode == "list":
            sys.stdout.write(_render(f"rc  {LIST_LINE}", name, {}))
        else:
            real = subprocess.run([REAL_DPKG_QUERY, "-s", name], capture_output=True, text=True, timeout=20).stdout
            sys.stdout.write(
                "".join(f"Status: {STATUS_FIELDS[state]['Status']}\n" if line.startswith("Status:") else line for line in real.splitlines(keepends=True))
            )
    if mode == "status" and code == 1:
        sys.stderr.write("Use dpkg --contents (= dpkg-deb --contents) to list archive files contents.\n")
    return code


def dpkg(args: list[str]) -> int:
    """`dpkg -r|-P PACKAGE` on this node's view; the dpkg-query frontends (-l, -s, -L, -S, -p) as dpkg
    runs them; a few read-only actions from the host's dpkg; nothing that would change the host."""
    if not args:
        return err("dpkg: error: need an action option\n\nType dpkg --help for help about installing and deinstalling packages [*];", 2)
    action, rest = args[0], args[1:]
    if action in ("-r", "--remove", "-P", "--purge"):
        purge = action in ("-P", "--purge")
        packages = [a for a in rest if not a.startswith("-")]
        if not packages:
            return err(f"dpkg: error: --{'purge' if purge else 'remove'} needs at least one package name argument", 2)
        read = False
        for package in packages:
            if _host_field(package, "Version") is None:
                sys.stderr.write(f"dpkg: warning: ignoring request to remove {package} which isn't installed\n")
                continue
            if package not in CEPH_PACKAGES:
                return err(f"dpkg: error: lab shim: only {', '.join(CEPH_PACKAGES)} can be removed on a lab PVE node", 2)
            state = node_packages().get(package)
            version = _host_field(package, "Version") or ""
            if state == PURGED or (state == REMOVED and not purge):
                how = "which isn't installed" if state == PURGED else "only the config\n files of which are on the system; use --purge to remove them too"
                sys.stderr.write(f"dpkg: warning: ignoring request to remove {package}{',' if state == REMOVED else ''} {how}\n")
                continue
            if not read:
                print("(Reading database ... 61234 files and directories currently installed.)")
                read = True
            if state is None:
                print(f"Removing {package} ({version}) ...")
            if purge:
                print(f"Purging configuration files for {package} ({version}) ...")
            _record(package, PURGED if purge else REMOVED)
        return 0
    frontends = {
        "-l": "-l",
        "--list": "-l",
        "-s": "-s",
        "--status": "-s",
        "-L": "-L",
        "--listfiles": "-L",
        "-S": "-S",
        "--search": "-S",
        "-p": "-p",
        "--print-avail": "-p",
    }
    if action in frontends:
        return dpkg_query([frontends[action], *rest])
    if action in ("--print-architecture", "--print-foreign-architectures", "--version", "--get-selections", "--compare-versions", "--audit", "-C"):
        os.execv(REAL_DPKG, [REAL_DPKG, *args])
    return err(f"dpkg: error: lab shim: '{action}' is not emulated on a lab PVE node (-r, -P, -l, -s and the read-only actions are)", 2)


# ---------------------------------------------------------------------- ip

# A lab node shares the host's network stack (every node address is on the host's lo), so `ip`
# is the host's iproute2 (Debian 12: iproute2 6.1, as on PVE 8), its output passed through, except
# that a node can carry per-interface overrides of what `ip -j link` / `ip -j addr` print for it,
# in $LAB_STATE_DIR/nodes/<node>/network.json (written by `python -m lab node-net`, lab.set_node_link):
#   {"links": {"lo": {"mtu": 1500, "master": "vmbr0"}}}
# `mtu` replaces the entry's mtu; `master` sets the bridge the interface is a port of (null: none),
# placed where iproute2 prints it (ip/ipaddress.c print_linkinfo: after mtu and qdisc, before
# operstate). Only the JSON forms (-j/-json) of `ip link [show|list|lst]` and `ip address
# [show|list|lst]` are rewritten; every other read-only command (`ip -j route get ADDR`, the text
# forms, ...) passes through unchanged. Commands that would change the host's network are refused.
IP_OBJECTS = {"link": "link", "address": "address"}  # iproute2 ip.c: the objects rewritten
IP_READ_VERBS = ("show", "list", "lst", "get", "help")
IP_VALUED = ("-n", "-netns", "-f", "-family", "-l", "-loops", "-rc", "-rcvbuf")
IP_REFUSED = ("-b", "-batch", "-force")


def real_ip() -> str | None:
    """The host's ip, never this directory's."""
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and os.path.realpath(p) != HERE)
    for candidate in (shutil.which("ip", path=path), "/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"):
        if candidate and os.path.realpath(os.path.dirname(candidate)) != HERE and os.access(candidate, os.X_OK):
            return candidate
    return None


def _matches(word: str, full: str) -> bool:
    """iproute2's matches(): WORD is a non-empty prefix of FULL."""
    return bool(word) and full.startswith(word)


def _ip_object(word: str) -> str:
    """The object iproute2 (ip/ip.c cmds[], first match wins) runs for WORD: address before
    addrlabel, link before l2tp, so `a`/`addr` is address and `l`/`li` is link."""
    if _matches(word, "address"):
        return "address"
    if _matches(word, "link"):
        return "link"
    return word


def _ip_read_only(obj: str, rest: list[str]) -> bool:
    if not rest:
        return True  # `ip link`, `ip addr`, `ip route`: list
    verb = rest[0]
    if verb in ("lst", "get", "help", "showdump") or (len(verb) >= 2 and (_matches(verb, "show") or _matches(verb, "list"))):
        return True
    return obj == "address" and verb == "s"  # ip/ipaddress.c: `s` is show there (no other s-verb before it)


def network_overrides() -> dict[str, dict]:
    """{ifname: {"mtu": int, "master": str | None}} of this node (network.json); {} if none."""
    state = os.environ.get("LAB_STATE_DIR") or os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(HERE))), ".lab")
    try:
        with open(os.path.join(state, "nodes", node(), "network.json"), encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    links = data.get("links") if isinstance(data, dict) else None
    return {str(k): v for k, v in links.items() if isinstance(v, dict)} if isinstance(links, dict) else {}


def apply_link_overrides(entries: list, overrides: dict[str, dict]) -> list:
    """ENTRIES (ip -j link/addr output) with the overrides of matching `ifname`s; every other
    field as ip printed it, in its order."""
    out = []
    for entry in entries:
        change = overrides.get(entry.get("ifname")) if isinstance(entry, dict) else None
        if not change:
            out.append(entry)
            continue
        entry = dict(entry)
        if isinstance(change.get("mtu"), int) and not isinstance(change.get("mtu"), bool):
            entry["mtu"] = change["mtu"]
        if "master" in change:
            master = change["master"]
            entry.pop("master", None)
            if isinstance(master, str) and master:
                rebuilt: dict = {}
                anchor = next((k for k in ("qdisc", "xdp", "mtu", "flags") if k in entry), None)
                for key, value in entry.items():
                    rebuilt[key] = value
                    if key == anchor:
                        rebuilt["master"] = master
                if anchor is None:
                    rebuilt["master"] = master
                entry = rebuilt
        out.append(entry)
    return out


def ip(args: list[str]) -> int:
    real = real_ip()
    if real is None:
        return err("lab ip: the host has no ip (iproute2) to pass through", 127)
    json_out = pretty = False
    i = 0
    while i < len(args) and args[i].startswith("-"):
        opt = "-" + args[i].lstrip("-")
        if opt in IP_REFUSED or (len(opt) > 2 and (_matches(opt, "-batch") or _matches(opt, "-force"))):
            return err(f"lab ip: {args[i]} is not passed through on a lab node (it could change the host's network)", 255)
        if len(opt) >= 2 and _matches(opt, "-json"):
            json_out = True
        elif opt in ("-p", "-pretty") or (len(opt) > 3 and _matches(opt, "-pretty")):
            pretty = True
        if opt in IP_VALUED:
            i += 1
        i += 1
    rest = args[i:]
    obj = _ip_object(rest[0]) if rest else ""
    if rest and not _ip_read_only(obj, rest[1:]):
        return err(
            f"lab ip: `ip {' '.join(args)}` would change the host's network (a lab node shares it): only show/list/get "
            "pass through; a node's mtu and bridge are set with `python -m lab node-net`",
            255,
        )
    overrides = network_overrides() if json_out and obj in IP_OBJECTS else {}
    if not overrides:
        os.execv(real, [real, *args])
    done = subprocess.run([real, *args], capture_output=True, text=True, timeout=30)
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        sys.stdout.write(done.stdout)
        return done.returncode
    try:
        entries = json.loads(done.stdout)
    except ValueError:
        sys.stdout.write(done.stdout)
        return done.returncode
    if not isinstance(entries, list):
        sys.stdout.write(done.stdout)
        return done.returncode
    entries = apply_link_overrides(entries, overrides)
    # iproute2's compact JSON is json.dumps with no spaces; -p's layout differs in whitespace only
    sys.stdout.write((json.dumps(entries, indent=4) if pretty else json.dumps(entries, separators=(",", ":"))) + "\n")
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
    if prog == "dpkg-query":
        return dpkg_query(args)
    if prog == "dpkg":
        return dpkg(args)
    if prog == "poweroff":
        return poweroff(args)
    if prog == "pveversion":
        return pveversion(args)
    if prog == "ip":
        return ip(args)
    return err(f"lab shim: unknown command {prog}", 127)
