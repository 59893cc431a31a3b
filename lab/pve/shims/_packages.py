"""`apt-get`/`apt`, `dpkg` and `dpkg-query` on a lab PVE node (see _lab_shim.py, Packages): the
host's packages less those removed on this node, never a change to the host's own."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from _lab_shim import CEPH_PACKAGES, HERE, _options, err, node

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
