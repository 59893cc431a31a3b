"""`ip` on a lab PVE node (see _lab_shim.py, Network): the host's iproute2, with the node's
per-interface overrides in its JSON `ip -j link|addr`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from _lab_shim import HERE, err, node

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
