"""What the lab's HA manager shares: pve-ha-manager's constants, its config's list formats, and
the cluster it runs on (:class:`HaCluster`)."""

from __future__ import annotations

import logging
import re
import time
from typing import Any, Protocol

from lab.pve.units import NodeUnits

LOG = logging.getLogger("lab.pve.ha")

# PVE seconds (pve-ha-manager's constants).
FENCE_DELAY = 60  # NodeStatus.pm $fence_delay; also the watchdog timeout
LRM_ROUND = 10  # LRM.pm work: an active round lasts $max_time 10 s
MAX_ACTIVE_IDLE_ROUNDS = 60  # LRM.pm $max_active_idle_rounds
LOCK_TIMEOUT = 120  # pmxcfs lock expiry: agent and manager locks
STATUS_STALE = 30  # Status.pm: "old timestamp - dead?"
TICK = 2  # how often the lab's CRM/LRM loop runs

SUCCESS, ERROR, IGNORED = 0, 1, 8  # Tools.pm: IGNORED "action was ignored for some good reason"
# Manager.pm $fence_recovery_cleanup: the config locks safe to remove after fencing (the node
# was reset, with all its state); any other lock (create, destroyed, ...) stays and blocks the start
FENCE_REMOVABLE_LOCKS = ("backup", "mounted", "migrate", "clone", "rollback", "snapshot", "snapshot-delete", "suspending", "suspended")
RESOURCE_KEYS = ("state", "group", "max_restart", "max_relocate", "failback", "comment", "auto-rebalance")


def ctime(ts: float) -> str:
    """Perl's scalar localtime: 'Mon Nov 24 22:40:00 2025'."""
    return time.ctime(ts)


def parse_node_list(text: str) -> dict[str, int | None]:
    """'node1:2,node2' -> {'node1': 2, 'node2': None} (pve-ha-node-list)."""
    out: dict[str, int | None] = {}
    for item in re.split(r"[\s,;]+", str(text or "")):
        if not item:
            continue
        node, _, pri = item.partition(":")
        out[node] = int(pri) if pri.strip().lstrip("-").isdigit() else None
    return out


def encode_node_list(nodes: dict[str, int | None]) -> str:
    return ",".join(f"{n}:{p}" if p is not None else n for n, p in sorted(nodes.items()))


def split_list(text: Any) -> list[str]:
    return [x for x in re.split(r"[\s,;]+", str(text or "")) if x]


def sid_parts(sid: str) -> tuple[str, str]:
    kind, _, name = sid.partition(":")
    return kind, name


class HaCluster(Protocol):
    """What the HA manager needs of the cluster it runs on (the lab's PVE, app.LabPve): its nodes
    and their power, its VMs, and the tasks the LRM runs (`qm start|stop|migrate`). A model
    module: it never imports the API."""

    time_scale: float
    mode: str
    quorate: bool
    power: dict[str, str]
    vms: list[Any]
    units: NodeUnits  # the nodes' systemd units: pve-ha-lrm, pve-ha-crm run or not
    datacenter: dict[str, str]  # datacenter.cfg: `ha` (the shutdown policy), `crs` (the scheduler)

    @property
    def node_names(self) -> list[str]: ...

    def vm(self, vmid: int) -> Any: ...

    def lab_vm_running(self, vm: Any) -> bool: ...

    def lab_node_capacity(self, node: str) -> tuple[int, int]: ...

    def lab_kill_vm(self, vm: Any, reason: str) -> None: ...

    def lab_steal_vm(self, vm: Any, target: str) -> None: ...

    async def lab_task_start(self, vm: Any, node: str) -> tuple[bool, str]: ...

    async def lab_task_stop(self, vm: Any, node: str) -> tuple[bool, str]: ...

    async def lab_task_migrate(self, vm: Any, node: str, target: str, online: bool) -> tuple[bool, str]: ...
