"""`systemctl`, `ha-manager`, `qm`, `poweroff` and `pveversion` on a lab PVE node (see _lab_shim.py):
the node's units and HA view from the lab PVE's control channel."""

from __future__ import annotations

import json
import sys
import time

from _lab_shim import UNITS, ControlError, _options, control, err, node

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
            if cmd == "node-maintenance":
                # CLI/ha_manager.pm: node-maintenance enable|disable <node> (node-maintenance-set)
                if not pos or pos[0] not in ("enable", "disable"):
                    return err(
                        "USAGE: ha-manager crm-command node-maintenance <cmd> ...\n\n       ha-manager crm-command node-maintenance disable <node>\n       ha-manager crm-command node-maintenance enable <node>",
                        255,
                    )
                if len(pos) < 2:
                    return err(f"400 not enough arguments\nha-manager crm-command node-maintenance {pos[0]} <node>", 255)
                c.ha_command(me, "node-maintenance", pos[1], disable="1" if pos[0] == "disable" else "0")
                return 0
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


# ---------------------------------------------------------------------- poweroff


def poweroff(args: list[str]) -> int:
    me = node()
    try:
        control().fault(me, "poweroff", sshd=True)
    except ControlError as exc:
        return err(f"Failed to power off system via logind: {exc}", 1)
    return 0


def graceful(args: list[str], prog: str) -> int:
    """`reboot`, `shutdown [-r|-h|-P] [now]`: systemd's graceful shutdown, which stops pve-ha-lrm
    with a shutdown job queued, so its LRM applies datacenter.cfg's HA shutdown policy (the lab's
    control channel, /node/shutdown). `poweroff` above stays the lab's power cut (the runbook's
    "power off the node", the drill's failure)."""
    reboot = prog == "reboot" or "-r" in args or "--reboot" in args
    if prog == "shutdown" and "-c" in args:
        return err("shutdown -c: no shutdown is scheduled in the lab", 1)
    try:
        control().call("POST", "/node/shutdown", {"node": node(), "reboot": reboot})
    except ControlError as exc:
        return err(f"Failed to {'reboot' if reboot else 'power off'} system via logind: {exc}", 1)
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
