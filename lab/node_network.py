"""Per-node network overrides of the lab's PVE nodes: what `ip -j link` / `ip -j addr` show on a
node for one of its interfaces (the `ip` shim, lab/pve/shims/_lab_shim.py, applies them to the
host's real output: every lab node shares the host's loopback network).

Kept in $LAB_STATE_DIR/nodes/<node>/network.json:

    {"links": {"lo": {"mtu": 1500, "master": "vmbr0"}}}

`mtu` replaces the interface's mtu, `master` names the bridge it is a port of (null: no
master). `lab up` and `lab down` clear every override; `python -m lab node-net` sets them.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from lab import LabError, paths

NODES = ("pve-node1", "pve-node2", "pve-node3")  # the lab's PVE nodes (lab/sshd.py HOSTS)
MTU_MIN, MTU_MAX = 68, 65536  # IPv4's minimum (RFC 791); lo's maximum in Linux
# an interface name as the kernel takes it: 1-15 bytes (IFNAMSIZ 16), no '/', ':' or whitespace
IFNAME = re.compile(r"^[^/:\s]{1,15}$")


def _check_node(node: str) -> str:
    if node not in NODES:
        raise LabError(f"unknown node {node!r}: use one of {', '.join(NODES)}")
    return node


def _check_ifname(what: str, name: Any) -> str:
    if not isinstance(name, str) or not IFNAME.match(name) or name in (".", ".."):
        raise LabError(f"{what} {name!r}: not an interface name (1-15 characters, no '/', ':' or whitespace)")
    return name


def path(node: str) -> Path:
    return paths.node_dir(_check_node(node)) / "network.json"


def node_net(node: str) -> dict[str, dict[str, Any]]:
    """NODE's overrides: {ifname: {"mtu": int, "master": str | None}} ({} if none)."""
    try:
        data = json.loads(path(node).read_text())
    except (OSError, ValueError):
        return {}
    links = data.get("links") if isinstance(data, dict) else None
    return dict(links) if isinstance(links, dict) else {}


def _write(node: str, links: dict[str, dict[str, Any]]) -> None:
    target = path(node)
    if not links:
        target.unlink(missing_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"network.json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"links": links}, indent=1, sort_keys=True) + "\n")
    tmp.replace(target)


def set_node_link(node: str, ifname: str, mtu: int | None = None, master: str | None = None) -> dict[str, Any]:
    """Make IFNAME on NODE show MTU and/or MASTER (the bridge it is a port of; "" for none, even
    where the host has one) in `ip -j link` / `ip -j addr` there. None keeps what was set before.
    Returns the interface's override."""
    _check_node(node)
    _check_ifname("interface", ifname)
    if mtu is not None and (isinstance(mtu, bool) or not isinstance(mtu, int) or not MTU_MIN <= mtu <= MTU_MAX):
        raise LabError(f"mtu {mtu!r}: give an integer from {MTU_MIN} to {MTU_MAX}")
    if master:
        _check_ifname("master", master)
    if mtu is None and master is None:
        raise LabError("give an mtu and/or a master")
    links = node_net(node)
    entry = dict(links.get(ifname) or {})
    if mtu is not None:
        entry["mtu"] = mtu
    if master is not None:
        entry["master"] = master or None
    links[ifname] = entry
    _write(node, links)
    return entry


def reset_node_net(node: str | None = None) -> None:
    """Remove the overrides of NODE (None: of every node): `ip` shows the host's values again."""
    for n in NODES if node is None else (_check_node(node),):
        path(n).unlink(missing_ok=True)
