"""The lab's HA manager: PVE's CRM and LRM, after pve-ha-manager (PVE/HA/Manager.pm,
NodeStatus.pm, LRM.pm, API2/HA/Status.pm), on the lab's emulated nodes.

Times are PVE seconds, turned into real ones by the API's time scale (0.1: the 60 s fence
delay takes 6 s). One loop plays every node's daemons:

- membership: a node is in the cluster partition while it is powered and connected; the
  partition is quorate with a majority of the nodes (2 of 3).
- LRM and watchdog (LRM.pm work, get_protected_ha_agent_lock, give_up_watchdog_protection):
  an LRM starts in `wait_for_agent_lock` (no agent lock, no watchdog) and goes `active` -- takes
  its node's agent lock and opens the watchdog -- once a service on the node is active
  (Tools.pm count_active_services), only while quorate and no fence is requested for the node
  (a service of it in `fence`, or the node itself in `fence`: is_fence_requested). An active
  LRM renews lock and watchdog every round and stays active while any HA service is configured
  on the node, whatever its state (has_configured_service_on_local_node; `ignored` ones are
  dropped from the manager status, so they do not count), and for more than
  $max_active_idle_rounds (60) rounds of ~10 s after the last one left; then it releases the
  lock and closes the watchdog ("going idle"). Without quorum, or asked to fence, it goes
  `lost_agent_lock`: the watchdog is no longer updated and resets the node FENCE_DELAY seconds
  after its last update: every VM on the node dies, HA-managed or not, and the LRM comes back
  as a new one (`wait_for_agent_lock`). A node whose LRM is idle is never reset.
- CRM (on the master, only while quorate): node states online -> unknown; a service on a node
  unknown for FENCE_DELAY goes to `fence`, the node to `fence`; the fence is acknowledged when
  the node's agent lock has expired (LOCK_TIMEOUT after its last renewal); the service goes
  through `recovery` to `started` on the node chosen by group/rule priority and load
  (select_service_node), its VM config moving there (steal_service).
  Start failures: the LRM retries max_restart times on the node, then the CRM relocates up
  to max_relocate times (try-next), then `error`. Failback (failback / group nofailback)
  migrates a service to a higher-priority node that comes back.
- LRM (per node in the quorate partition): starts, stops and migrates its services' VMs
  through the API's own tasks (qmstart, qmstop, qmigrate), which run the real lock holders.
- the daemons as systemd units (units.py; `systemctl stop|start pve-ha-lrm|pve-ha-crm` on a
  node), after LRM.pm, CRM.pm, Manager.pm and Service/pve_ha_{lrm,crm}.pm of pve-ha-manager
  5.0 (PVE 9.0; 4.0 of PVE 8 is the same here):
  * stopping pve-ha-lrm is not a node shutdown (Env/PVE2.pm is_node_shutdown finds no
    shutdown.target job), so LRM.pm shutdown_request puts the LRM in mode `restart` ("restart
    LRM, freeze all services") and writes its status; the CRM freezes the node's services
    (Manager.pm manage: lrm mode `restart` turns started/stopped/request_stop into `freeze`;
    their VMs keep running, unmanaged); once the node has no active service and no worker left
    the LRM closes its watchdog and releases its agent lock (give_up_watchdog_protection: no
    fence) and exits, until then the unit is `deactivating` (TimeoutStopSec=infinity). A
    stopped LRM writes no status: `ha-manager status` shows `lrm NODE (restart mode, <time of
    its last write>)` for 30 s (Status.pm: a mode other than active), then `lrm NODE (old
    timestamp - dead?, <time>)`. Starting it again (LRM.pm new: mode active) writes its status
    at once and the CRM unfreezes the services (`freeze` -> started / request_stop).
  * stopping pve-ha-crm: CRM.pm shutdown_request; a master gives up its watchdog and releases
    the manager lock ("voluntary release CRM lock"), so a running CRM elsewhere takes it on its
    next round; a node whose CRM is stopped never becomes master. With no CRM running on any
    quorate node nothing manages the cluster and the master line keeps the last timestamp
    (`old timestamp - dead?` after 30 s).

Status answers follow PVE 8 / 9.0's API2/HA/Status.pm (`quorum OK`, `master pve-node1 (active,
<date>)`, `lrm pve-node1 (active, <date>)`, `service vm:101 (pve-node1, started)`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import re
import time
from typing import Any, Protocol

from lab.pve.units import ACTIVE, DEACTIVATING, INACTIVE, NodeUnits

LOG = logging.getLogger("lab.pve.ha")

# PVE seconds (pve-ha-manager's constants).
FENCE_DELAY = 60  # NodeStatus.pm $fence_delay; also the watchdog timeout
LRM_ROUND = 10  # LRM.pm work: an active round lasts $max_time 10 s
MAX_ACTIVE_IDLE_ROUNDS = 60  # LRM.pm $max_active_idle_rounds
LOCK_TIMEOUT = 120  # pmxcfs lock expiry: agent and manager locks
STATUS_STALE = 30  # Status.pm: "old timestamp - dead?"
TICK = 2  # how often the lab's CRM/LRM loop runs

SUCCESS, ERROR = 0, 1
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

    @property
    def node_names(self) -> list[str]: ...

    def vm(self, vmid: int) -> Any: ...

    def lab_vm_running(self, vm: Any) -> bool: ...

    def lab_kill_vm(self, vm: Any, reason: str) -> None: ...

    def lab_steal_vm(self, vm: Any, target: str) -> None: ...

    async def lab_task_start(self, vm: Any, node: str) -> tuple[bool, str]: ...

    async def lab_task_stop(self, vm: Any, node: str) -> tuple[bool, str]: ...

    async def lab_task_migrate(self, vm: Any, node: str, target: str, online: bool) -> tuple[bool, str]: ...


class HaManager:
    """Config (resources, groups, rules) and the manager state; `run()` is the loop."""

    def __init__(self, pve: HaCluster) -> None:
        self.pve = pve
        # resources.cfg / groups.cfg / rules.cfg
        self.resources: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, dict[str, Any]] = {}
        self.rules: dict[str, dict[str, Any]] = {}
        self.rule_order: dict[str, int] = {}
        # manager_status
        self.ss: dict[str, dict[str, Any]] = {}
        self.node_status: dict[str, str] = {}
        self.master: str | None = None
        self.master_ts: float | None = None  # wall clock, shown
        self.master_seen: float = 0.0  # monotonic
        self.last_online: dict[str, float] = {}  # monotonic
        self.lock_renewed: dict[str, float] = {}
        self.lrm_ts: dict[str, float] = {}  # wall clock
        self.lrm_mode: dict[str, str] = {}  # as last written in each node's lrm_status
        self.lrm_daemon_mode: dict[str, str] = {}  # the running LRM's own mode (active, restart)
        self.manager_lock_free = False  # the master's CRM released the manager lock (it stopped)
        # LRM.pm: each LRM's local state (wait_for_agent_lock, active, lost_agent_lock), as last
        # written to its lrm_status, when its watchdog was last updated (present: open), and
        # since when an active LRM has no service configured on its node
        self.lrm_state: dict[str, str] = {}
        self.lrm_state_written: dict[str, str] = {}
        self.watchdog_updated: dict[str, float] = {}  # monotonic
        self.lrm_idle_since: dict[str, float] = {}  # monotonic
        self.jobs: dict[str, asyncio.Task] = {}
        self.results: dict[str, int] = {}
        self.restarts: dict[str, int] = {}
        self.log_lines: collections.deque[str] = collections.deque(maxlen=5000)
        self.log_seq = 0
        self.started_at = time.time()
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        now = time.monotonic()
        for node in self.pve.node_names:
            self.node_status[node] = "online"
            self.last_online[node] = now
            self.lock_renewed[node] = 0.0  # no LRM holds it yet
            self.lrm_ts[node] = time.time()
            self.lrm_mode[node] = "active"
            self.lrm_daemon_mode[node] = "active"
            self.lrm_state[node] = self.lrm_state_written[node] = "wait_for_agent_lock"

    # ------------------------------------------------------------------ helpers

    def secs(self, pve_seconds: float) -> float:
        """Real seconds for PVE seconds (never 0, so the loop cannot spin)."""
        return max(pve_seconds * (self.pve.time_scale or 0.01), 0.01)

    def log(self, node: str, daemon: str, level: str, message: str) -> None:
        stamp = time.strftime("%b %d %H:%M:%S")
        line = f"{stamp} {node} {daemon}: <{level}> {message}"
        self.log_seq += 1
        self.log_lines.append(line)
        LOG.info("%s", line)

    def wake(self) -> None:
        self._wake.set()

    def partition(self) -> list[str]:
        return [n for n in self.pve.node_names if self.pve.power.get(n) == "on"]

    def quorate(self) -> bool:
        return len(self.partition()) * 2 > len(self.pve.node_names)

    def digest(self, kind: str) -> str:
        data = {"resources": self.resources, "groups": self.groups, "rules": self.rules}[kind]
        text = repr(sorted((k, sorted(v.items())) for k, v in data.items()))
        if kind == "rules":
            text += repr(sorted(self.rule_order.items()))
        return hashlib.sha1(text.encode()).hexdigest()

    def vm_of(self, sid: str):
        kind, name = sid_parts(sid)
        if kind != "vm" or not name.isdigit():
            return None
        return self.pve.vm(int(name))

    def conf(self, sid: str) -> dict[str, Any]:
        """read_and_check_resources_config: the resource with defaults, and its node."""
        d = dict(self.resources.get(sid, {}))
        d.setdefault("state", "started")
        if d["state"] == "enabled":
            d["state"] = "started"
        d.setdefault("failback", 1)
        d.setdefault("max_restart", 1)
        d.setdefault("max_relocate", 1)
        vm = self.vm_of(sid)
        d["node"] = vm.node if vm is not None else None
        return d

    def groups_migrated(self) -> bool:
        return self.pve.mode == "rules"

    # ------------------------------------------------------------------ config changes

    def service_removed(self, sid: str) -> None:
        self.ss.pop(sid, None)
        self.results.pop(sid, None)
        self.restarts.pop(sid, None)
        vm = self.vm_of(sid)
        if vm is not None:
            vm.ha_state = None

    def purge_rules(self, sid: str) -> None:
        for rid in list(self.rules):
            res = [r for r in split_list(self.rules[rid].get("resources")) if r != sid]
            if res:
                self.rules[rid]["resources"] = ",".join(res)
            else:
                del self.rules[rid]
                self.rule_order.pop(rid, None)

    def migrate_groups_to_rules(self) -> None:
        """PVE 9's persistent migration (Groups.pm migrate_groups_to_rules + Manager.pm)."""
        used: dict[str, list[str]] = {}
        for sid, res in self.resources.items():
            if res.get("group"):
                used.setdefault(res["group"], []).append(sid)
        for group, sids in sorted(used.items()):
            cfg = self.groups.get(group)
            if cfg is None:
                continue
            rid = f"ha-group-{group}"
            self.rules[rid] = {
                "type": "node-affinity",
                "resources": ",".join(sorted(sids)),
                "nodes": cfg["nodes"],
                "comment": cfg.get("comment") or f"Generated from HA group '{group}'.",
            }
            if cfg.get("restricted"):
                self.rules[rid]["strict"] = 1
            self.rule_order[rid] = max(self.rule_order.values(), default=0) + 1
            for sid in sids:
                if cfg.get("nofailback"):
                    self.resources[sid]["failback"] = 0
                self.resources[sid].pop("group", None)
            self.log(self.master or self.pve.node_names[0], "pve-ha-crm", "info", f"migrated HA group '{group}' to node affinity rule '{rid}'")
        for sid in self.resources:
            self.resources[sid].pop("group", None)
        self.groups.clear()

    # ------------------------------------------------------------------ node selection

    def node_affinity(self, sid: str, cd: dict[str, Any]) -> tuple[dict[str, int], bool] | None:
        """(nodes with priority, failback) for the service, or None: no restriction."""
        if self.pve.mode == "rules":
            for rid in sorted(self.rules, key=lambda r: self.rule_order.get(r, 0)):
                rule = self.rules[rid]
                if rule.get("type") != "node-affinity" or rule.get("disable"):
                    continue
                if sid not in split_list(rule.get("resources")):
                    continue
                nodes = {n: (p if p is not None else 0) for n, p in parse_node_list(rule["nodes"]).items()}
                if not rule.get("strict"):
                    for n in self.pve.node_names:
                        nodes.setdefault(n, -1)
                return nodes, bool(int(cd.get("failback", 1)))
            return None, bool(int(cd.get("failback", 1)))
        group = self.groups.get(cd.get("group") or "")
        if group is None:
            return None, True
        nodes = {n: (p if p is not None else 0) for n, p in parse_node_list(group["nodes"]).items()}
        if not group.get("restricted"):
            for n in self.pve.node_names:
                nodes.setdefault(n, -1)
        return nodes, not group.get("nofailback")

    def usage(self) -> dict[str, int]:
        count = {n: 0 for n in self.pve.node_names}
        for sd in self.ss.values():
            if sd["state"] in ("started", "request_start", "migrate", "relocate", "recovery"):
                node = sd.get("target") or sd["node"]
                if node in count:
                    count[node] += 1
        return count

    def select_service_node(self, sid: str, cd: dict[str, Any], sd: dict[str, Any], preference: str) -> str | None:
        current = sd["node"]
        online = [n for n in self.pve.node_names if self.node_status.get(n) == "online"]
        affinity, failback = self.node_affinity(sid, cd)
        allowed = {n: 0 for n in online} if affinity is None else {n: p for n, p in affinity.items() if n in online}
        if not allowed:
            return None
        top = max(allowed.values())
        pri = {n for n, p in allowed.items() if p == top}
        if preference == "none" and not failback and current in allowed:
            return current
        if preference == "try-next":
            pri -= set(sd.get("failed_nodes") or [])
        if preference == "none" and current in pri:
            return current
        usage = self.usage()
        nodes = sorted(pri, key=lambda n: (usage.get(n, 0), n))
        if not nodes:
            return None
        if preference == "try-next" and current in nodes:
            idx = nodes.index(current)
            return nodes[idx + 1] if idx < len(nodes) - 1 else nodes[0]
        return nodes[0]

    # ------------------------------------------------------------------ loop

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self.run())

    async def stop(self) -> None:
        for job in list(self.jobs.values()):
            job.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self) -> None:
        self.log(self.pve.node_names[0], "pve-ha-crm", "info", "starting server")
        while True:
            try:
                self.tick()
            except Exception:
                LOG.exception("HA manager round failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.secs(TICK))

    def tick(self) -> None:
        now, wall = time.monotonic(), time.time()
        part = self.partition()
        quorate = len(part) * 2 > len(self.pve.node_names)
        self.pve.quorate = quorate
        for node in self.pve.node_names:
            if self.lrm_unit(node) == INACTIVE or self.pve.power.get(node) not in ("on", "isolated"):
                continue  # no LRM runs: nothing writes its status, renews its agent lock or watchdog
            self.lrm_work(node, now, quorate and node in part)
            if quorate and node in part and self.lrm_state[node] != "lost_agent_lock":
                self.write_lrm_status(node, wall)  # LRM.pm work: not in lost_agent_lock
        self.watchdog(now)
        if quorate:
            self.crm(now, wall, part)
            for node in part:
                if self.lrm_unit(node) == ACTIVE and self.lrm_state[node] == "active":
                    self.lrm(node)  # LRM.pm work: only an active LRM manages its resources
        self.finish_lrm_stops()

    # ------------------------------------------------------------------ the LRM's state

    def fence_requested(self, node: str) -> bool:
        """LRM.pm is_fence_requested: a service of the node in `fence`, or the node itself."""
        return self.node_status.get(node) == "fence" or any(sd["node"] == node and sd["state"] == "fence" for sd in self.ss.values())

    def configured_here(self, node: str) -> bool:
        """LRM.pm has_configured_service_on_local_node (any state), or a worker still running."""
        return any(sd["node"] == node for sd in self.ss.values()) or any(self.ss.get(sid, {}).get("node") == node for sid in self.jobs)

    def set_lrm_state(self, node: str, state: str) -> None:
        if self.lrm_state.get(node) != state:
            self.log(node, "pve-ha-lrm", "info", f"status change {self.lrm_state.get(node)} => {state}")
            self.lrm_state[node] = state

    def take_agent_lock(self, node: str, now: float) -> None:
        """LRM.pm get_protected_ha_agent_lock: the agent lock renewed, the watchdog opened or updated."""
        self.lock_renewed[node] = now
        self.watchdog_updated[node] = now

    def give_up_watchdog(self, node: str) -> None:
        """LRM.pm give_up_watchdog_protection (Env/PVE2.pm watchdog_close)."""
        if self.watchdog_updated.pop(node, None) is not None:
            self.log(node, "pve-ha-lrm", "info", "watchdog closed (disabled)")

    def lrm_work(self, node: str, now: float, quorate: bool) -> None:
        """LRM.pm work, its state changes. Without quorum the agent lock cannot be taken
        (get_ha_agent_lock fails), so an active LRM loses it."""
        state = self.lrm_state[node]
        fence = quorate and self.fence_requested(node)
        if state == "wait_for_agent_lock":
            if not fence and quorate and self.active_count(node):
                self.take_agent_lock(node, now)
                self.set_lrm_state(node, "active")
        elif state == "lost_agent_lock":
            if not fence and quorate:
                self.take_agent_lock(node, now)
                self.set_lrm_state(node, "active")
        elif state == "active":
            if fence:
                self.log(node, "pve-ha-lrm", "err", "node need to be fenced - releasing agent_lock")
                self.set_lrm_state(node, "lost_agent_lock")
            elif not quorate:
                self.set_lrm_state(node, "lost_agent_lock")
            else:
                self.take_agent_lock(node, now)
                if self.configured_here(node):
                    self.lrm_idle_since.pop(node, None)
                elif now - self.lrm_idle_since.setdefault(node, now) > self.secs(MAX_ACTIVE_IDLE_ROUNDS * LRM_ROUND):
                    self.log(node, "pve-ha-lrm", "info", f"node had no service configured for {MAX_ACTIVE_IDLE_ROUNDS} rounds, going idle.")
                    self.lock_renewed[node] = 0.0  # release_ha_agent_lock
                    self.give_up_watchdog(node)
                    self.set_lrm_state(node, "wait_for_agent_lock")
                    self.lrm_idle_since.pop(node, None)

    # ------------------------------------------------------------------ the daemons as units

    def lrm_unit(self, node: str) -> str:
        return self.pve.units.state(node, "pve-ha-lrm")

    def crm_unit(self, node: str) -> str:
        return self.pve.units.state(node, "pve-ha-crm")

    def write_lrm_status(self, node: str, wall: float) -> None:
        """LRM.pm update_lrm_status (only while quorate): the timestamp and the LRM's mode."""
        self.lrm_ts[node] = wall
        self.lrm_mode[node] = self.lrm_daemon_mode.get(node, "active")
        self.lrm_state_written[node] = self.lrm_state[node]

    def can_write(self, node: str) -> bool:
        return self.pve.power.get(node) == "on" and self.quorate() and node in self.partition()

    def active_count(self, node: str) -> int:
        """Tools.pm count_active_services: services on NODE (or migrating to it) that are not
        stopped, frozen, in error or request_start."""
        return sum(
            1
            for sd in self.ss.values()
            if (sd["node"] == node or sd.get("target") == node) and sd["state"] not in ("stopped", "freeze", "error", "request_start")
        )

    def lrm_stop(self, node: str) -> None:
        """`systemctl stop pve-ha-lrm`: LRM.pm shutdown_request when the node is not shutting
        down: mode restart, status written (if quorate); the unit deactivates until
        finish_lrm_stops sees the node's services frozen."""
        if self.lrm_unit(node) != ACTIVE:
            return
        self.pve.units.set(node, "pve-ha-lrm", DEACTIVATING)
        self.log(node, "pve-ha-lrm", "info", "restart LRM, freeze all services")
        self.lrm_daemon_mode[node] = "restart"
        if self.can_write(node):
            self.write_lrm_status(node, time.time())
        self.wake()

    def finish_lrm_stops(self) -> None:
        """A stopping LRM exits once its node has no active service and no worker (LRM.pm work,
        mode restart): watchdog closed, agent lock released, no more status writes."""
        for node in self.pve.node_names:
            if self.lrm_unit(node) != DEACTIVATING:
                continue
            if self.active_count(node) or any(self.ss.get(sid, {}).get("node") == node for sid in self.jobs):
                continue
            self.give_up_watchdog(node)  # an idle LRM never opened it
            self.lrm_state[node] = "wait_for_agent_lock"  # the next LRM starts there
            self.lrm_idle_since.pop(node, None)
            self.lock_renewed[node] = 0.0  # released: nobody has to wait for it to expire
            self.log(node, "pve-ha-lrm", "info", "server stopped")
            self.pve.units.set(node, "pve-ha-lrm", INACTIVE)

    def lrm_start(self, node: str) -> None:
        """`systemctl start pve-ha-lrm`: LRM.pm new (mode active, wait_for_agent_lock), its
        status written at once if quorate, so the CRM unfreezes the node's services."""
        if self.lrm_unit(node) == ACTIVE:
            return
        self.pve.units.set(node, "pve-ha-lrm", ACTIVE)
        self.log(node, "pve-ha-lrm", "info", "starting server")
        self.log(node, "pve-ha-lrm", "info", "status change startup => wait_for_agent_lock")
        self.lrm_daemon_mode[node] = "active"
        self.lrm_state[node] = "wait_for_agent_lock"  # LRM.pm new: it takes the lock in work()
        if self.can_write(node):
            self.write_lrm_status(node, time.time())
        self.wake()

    def crm_stop(self, node: str) -> None:
        """`systemctl stop pve-ha-crm`: CRM.pm shutdown_request; a master releases the manager
        lock on its way out, so another running CRM takes over at once."""
        if self.crm_unit(node) == INACTIVE:
            return
        self.log(node, "pve-ha-crm", "info", "server received shutdown request")
        if self.master == node:
            self.log(node, "pve-ha-crm", "info", "voluntary release CRM lock")
            self.manager_lock_free = True
        self.log(node, "pve-ha-crm", "info", "server stopped")
        self.pve.units.set(node, "pve-ha-crm", INACTIVE)
        self.wake()

    def crm_start(self, node: str) -> None:
        """`systemctl start pve-ha-crm`: a new CRM (wait_for_quorum), master when the lock is free."""
        if self.crm_unit(node) == ACTIVE:
            return
        self.pve.units.set(node, "pve-ha-crm", ACTIVE)
        self.log(node, "pve-ha-crm", "info", "starting server")
        self.log(node, "pve-ha-crm", "info", "status change startup => wait_for_quorum")
        self.wake()

    def node_booted(self, node: str) -> None:
        """NODE powered on again: its LRM and CRM start as new daemons (units.boot made the units
        active); the LRM's mode is active again, its state wait_for_agent_lock, the watchdog closed
        with the power (the new LRM opens it when it goes active)."""
        self.lrm_daemon_mode[node] = "active"
        self.lrm_state[node] = "wait_for_agent_lock"
        self.watchdog_updated.pop(node, None)
        self.lrm_idle_since.pop(node, None)
        self.wake()

    # ------------------------------------------------------------------ watchdog

    def watchdog(self, now: float) -> None:
        """watchdog-mux: an open watchdog not updated for FENCE_DELAY seconds resets its node
        (LRM.pm: an LRM in lost_agent_lock no longer updates it). The node reboots: all its VMs
        die, HA-managed or not, and its LRM starts again in wait_for_agent_lock."""
        for node, updated in list(self.watchdog_updated.items()):
            if self.pve.power.get(node) not in ("on", "isolated"):
                self.watchdog_updated.pop(node, None)  # powered off: no watchdog runs
                continue
            if now - updated < self.secs(FENCE_DELAY):
                continue
            self.log(node, "watchdog-mux", "crit", "client watchdog expired - disable watchdog updates")
            self.log(node, "kernel", "emerg", f"watchdog: node reset (its LRM in {self.lrm_state[node]}, the watchdog open)")
            for vm in self.pve.vms:
                if vm.node == node and self.pve.lab_vm_running(vm):
                    self.pve.lab_kill_vm(vm, "the node was reset by its watchdog")
            self.watchdog_updated.pop(node, None)
            self.lrm_state[node] = "wait_for_agent_lock"
            self.lrm_daemon_mode[node] = "active"
            self.lrm_idle_since.pop(node, None)

    # ------------------------------------------------------------------ CRM

    def set_state(self, sid: str, sd: dict[str, Any], state: str, **extra: Any) -> None:
        old = sd["state"]
        sd["state"] = state
        for key in ("target",):
            sd.pop(key, None)
        sd.update(extra)
        if state != "started":
            sd.pop("running", None)
        text = f"service '{sid}': state changed from '{old}' to '{state}'"
        if extra.get("node") or state in ("started", "request_stop"):
            text += f"  (node = {sd['node']})"
        if extra.get("target"):
            text += f"  (node = {sd['node']}, target = {extra['target']})"
        self.log(self.master or "?", "pve-ha-crm", "info", text)
        self.update_vm_state(sid)

    def set_node_state(self, node: str, state: str) -> None:
        old = self.node_status.get(node, "unknown")
        if old == state:
            return
        self.node_status[node] = state
        self.log(self.master or node, "pve-ha-crm", "info", f"node '{node}': state changed from '{old}' => '{state}'")

    def update_vm_state(self, sid: str) -> None:
        vm = self.vm_of(sid)
        if vm is None:
            return
        sd = self.ss.get(sid)
        vm.ha_state = self.verbose_state(sid, sd) if sid in self.resources else None

    def verbose_state(self, sid: str, sd: dict[str, Any] | None) -> str:
        """PVE::HA::Tools::get_verbose_service_state."""
        if sid not in self.resources:
            return "deleting"
        cd = self.conf(sid)
        req = cd["state"]
        if req == "ignored":
            return "ignored"
        if cd.get("node") is None:
            return "not found"
        if sd is None:
            return "queued"
        cur = sd["state"]
        state = cur
        if cur == "stopped":
            if req == "started":
                state = "starting"
            elif req == "disabled":
                state = "disabled"
        elif cur == "started":
            if req in ("stopped", "disabled"):
                state = "stopping"
            if not sd.get("running"):
                state = "starting"
        elif cur == "error" and req == "disabled":
            state = "clearing error flag"
        return state

    def crm(self, now: float, wall: float, part: list[str]) -> None:
        # the manager lock: kept by a master in the partition whose CRM runs, taken over by a
        # running CRM once it expired or its owner released it (a stopped CRM, CRM.pm)
        crms = [n for n in part if self.crm_unit(n) == ACTIVE]
        if self.master in crms:
            self.master_seen = now
        elif crms and (self.master is None or self.manager_lock_free or now - self.master_seen >= self.secs(LOCK_TIMEOUT)):
            new = sorted(crms)[0]
            if self.master is not None:
                self.log(new, "pve-ha-crm", "info", "successfully acquired lock 'ha_manager_lock'")
            self.log(new, "pve-ha-crm", "info", "status change wait_for_quorum => master")
            self.master, self.master_seen = new, now
            self.manager_lock_free = False
        else:
            return  # the old master's lock has not expired yet, or no CRM runs to take it
        self.master_ts = wall
        master = self.master

        # NodeStatus::update
        for node in self.pve.node_names:
            state = self.node_status.get(node, "unknown")
            if node in part:
                self.last_online[node] = now
                if state in ("unknown", "gone"):
                    self.set_node_state(node, "online")
            elif state == "online":
                self.set_node_state(node, "unknown")

        # new and removed services
        for sid in list(self.ss):
            if sid not in self.resources or self.vm_of(sid) is None:
                if sid not in self.resources:
                    self.log(master, "pve-ha-crm", "info", f"removing stale service '{sid}' (no config)")
                self.ss.pop(sid, None)
        for sid in sorted(self.resources):
            cd = self.conf(sid)
            if cd["state"] == "ignored" or cd["node"] is None:
                if sid in self.ss and cd["state"] == "ignored":
                    self.ss.pop(sid, None)
                continue
            if sid not in self.ss:
                vm = self.vm_of(sid)
                running = vm is not None and self.pve.lab_vm_running(vm)
                state = "started" if cd["state"] == "started" else ("request_stop" if running else "stopped")
                self.ss[sid] = {"node": cd["node"], "state": state}
                if running and state == "started":
                    self.ss[sid]["running"] = 1
                self.log(master, "pve-ha-crm", "info", f"adding new service '{sid}' on node '{cd['node']}'")
                self.update_vm_state(sid)

        for _ in range(4):  # PVE repeats a round after fencing for a faster recovery
            repeat = False
            for sid in sorted(self.ss):
                repeat |= self.next_state(sid, now)
                repeat |= self.freeze_if_restarting(sid)
            # Manager.pm manage: "Avoid that a node without services in 'fence' state (e.g.,
            # removed manually by admin) is stuck with the 'fence' node state": fence it anyway
            # (NodeStatus.pm fence_node: acknowledged once its agent lock can be taken), then it
            # comes back online like any node in the quorate partition (NodeStatus.pm update)
            fencing = {sd["node"] for sd in self.ss.values() if sd["state"] == "fence"}
            for node in sorted(self.node_status):
                if self.node_status[node] == "fence" and node not in fencing:
                    self.log(master, "pve-ha-crm", "notice", f"node '{node}' in fence state but no services to-fence! admin interference?!")
                    repeat |= self.fence_node(node, now)
            if not repeat:
                break
        for sid in self.ss:
            self.update_vm_state(sid)

    def freeze_if_restarting(self, sid: str) -> bool:
        """Manager.pm manage: a service on a node whose LRM is in restart mode is frozen."""
        sd = self.ss.get(sid)
        if sd is None or self.lrm_mode.get(sd["node"]) != "restart" or sd["state"] not in ("started", "stopped", "request_stop"):
            return False
        self.set_state(sid, sd, "freeze")
        return True

    def offline_delayed(self, node: str, now: float) -> bool:
        if self.node_status.get(node) == "online":
            return False
        return now - self.last_online.get(node, now) >= self.secs(FENCE_DELAY)

    def fence_node(self, node: str, now: float) -> bool:
        """Manager fence_node: the fence is done once the node's agent lock can be taken."""
        if self.node_status.get(node) != "fence":
            self.set_node_state(node, "fence")
            self.log(self.master, "pve-ha-crm", "notice", f"start fencing node '{node}'")
        if now - self.lock_renewed.get(node, 0) >= self.secs(LOCK_TIMEOUT):
            self.log(self.master, "pve-ha-crm", "info", f"successfully acquired lock 'ha_agent_{node}_lock'")
            self.log(self.master, "pve-ha-crm", "info", f"fencing: acknowledged - got agent lock for node '{node}'")
            self.set_node_state(node, "unknown")
            # the node is fenced: whatever still ran there is gone
            for vm in self.pve.vms:
                if vm.node == node and self.pve.lab_vm_running(vm):
                    self.pve.lab_kill_vm(vm, "fenced")
            return True
        return False

    def fence_recovery_cleanup(self, sid: str) -> None:
        """Manager.pm $fence_recovery_cleanup with Resources/PVEVM.pm remove_locks: a leftover
        lock of FENCE_REMOVABLE_LOCKS is deleted from the config; any other stays (the start on
        the new node then fails: QemuServer.pm vm_start -> check_lock)."""
        vm = self.vm_of(sid)
        lock = (vm.config.get("lock") or vm.lock) if vm is not None else None
        if lock in FENCE_REMOVABLE_LOCKS:
            vm.lock = None
            vm.config.pop("lock", None)
            self.log(self.master, "pve-ha-crm", "warning", f"removed leftover lock '{lock}' from recovered service '{sid}' to allow its start.")

    def next_state(self, sid: str, now: float) -> bool:
        sd = self.ss[sid]
        cd = self.conf(sid)
        state = sd["state"]
        result = self.results.pop(sid, None)
        node_online = self.node_status.get(sd["node"]) == "online"

        if state == "freeze":
            # Manager.pm: unfreeze once the node's LRM is active again
            if self.lrm_mode.get(sd["node"]) == "active":
                self.set_state(sid, sd, "started" if cd["state"] == "started" else "request_stop")
                return True
            return False

        if state in ("started", "stopped", "request_stop", "migrate", "relocate") and not node_online:
            if self.offline_delayed(sd["node"], now):
                if state == "stopped" and cd["state"] == "disabled":
                    return False
                self.set_state(sid, sd, "fence")
                return True
            return False

        if state == "fence":
            if self.fence_node(sd["node"], now):
                for other_sid, other in self.ss.items():
                    if other["state"] == "fence" and other["node"] == sd["node"]:
                        self.set_state(other_sid, other, "recovery")
                return True
            return False

        if state == "recovery":
            if cd["state"] == "disabled":
                sd.pop("failed_nodes", None)
                self.set_state(sid, sd, "stopped")
                return False
            target = self.select_service_node(sid, cd, sd, "best-score")
            if target is None:
                self.log(self.master, "pve-ha-crm", "err", f"recovering service '{sid}' from fenced node '{sd['node']}' failed, no recovery node found")
                return False
            fenced = sd["node"]
            self.log(self.master, "pve-ha-crm", "info", f"recover service '{sid}' from fenced node '{fenced}' to node '{target}'")
            self.fence_recovery_cleanup(sid)
            self.pve.lab_steal_vm(self.vm_of(sid), target)
            sd["node"] = target
            self.restarts.pop(sid, None)
            self.set_state(sid, sd, "started" if cd["state"] == "started" else "request_stop", node=target)
            return False

        if state == "stopped":
            if sd.get("cmd"):
                cmd, target = sd.pop("cmd")
                if self.node_status.get(target) == "online" and target != sd["node"]:
                    self.log(self.master, "pve-ha-crm", "info", f"{cmd} service '{sid}' to node '{target}' (stopped)")
                    self.pve.lab_steal_vm(self.vm_of(sid), target)
                    sd["node"] = target
            if cd["state"] == "started":
                target = self.select_service_node(sid, cd, sd, "none") or sd["node"]
                if target != sd["node"]:
                    self.set_state(sid, sd, "relocate", target=target)
                else:
                    self.set_state(sid, sd, "started", node=sd["node"])
            return False

        if state == "request_stop":
            if (result is not None or not self.pve.lab_vm_running(self.vm_of(sid))) and sid not in self.jobs:
                self.set_state(sid, sd, "stopped")
            return False

        if state in ("migrate", "relocate"):
            if result is None:
                return False
            if result == SUCCESS:
                sd["node"] = sd.get("target", sd["node"])
                next_state = "started" if cd["state"] == "started" else "request_stop"
                self.set_state(sid, sd, next_state, node=sd["node"])
            else:
                self.log(self.master, "pve-ha-crm", "err", f"service '{sid}' - migration failed")
                self.set_state(sid, sd, "started", node=sd["node"])
            return False

        if state == "error":
            if cd["state"] == "disabled":
                sd.pop("failed_nodes", None)
                self.set_state(sid, sd, "stopped")
            return False

        if state == "started":
            if cd["state"] in ("stopped", "disabled"):
                self.set_state(sid, sd, "request_stop")
                return False
            if sd.get("cmd"):
                cmd, target = sd.pop("cmd")
                if self.node_status.get(target) != "online":
                    self.log(self.master, "pve-ha-crm", "err", f"ignore service '{sid}' {cmd} request - node '{target}' not online")
                elif target == sd["node"]:
                    self.log(self.master, "pve-ha-crm", "info", f"ignore service '{sid}' {cmd} request - service already on node '{target}'")
                else:
                    self.log(self.master, "pve-ha-crm", "info", f"{cmd} service '{sid}' to node '{target}'")
                    self.set_state(sid, sd, cmd, target=target)
                return False
            preference = "none"
            if result is not None:
                if result == SUCCESS:
                    if sd.get("failed_nodes"):
                        self.log(
                            self.master,
                            "pve-ha-crm",
                            "info",
                            f"relocation policy successful for '{sid}' on node '{sd['node']}', failed nodes: " + ", ".join(sd["failed_nodes"]),
                        )
                    sd.pop("failed_nodes", None)
                    sd["running"] = 1
                else:
                    sd.pop("running", None)
                    sd.setdefault("failed_nodes", []).append(sd["node"])  # record_service_failed_on_node
                    if len(sd["failed_nodes"]) <= int(cd["max_relocate"]):
                        preference = "try-next"
                        self.log(self.master, "pve-ha-crm", "warning", f"starting service {sid} on node '{sd['node']}' failed, relocating service.")
                    else:
                        self.log(
                            self.master,
                            "pve-ha-crm",
                            "err",
                            f"recovery policy for service {sid} failed, entering error state. Failed nodes: " + ", ".join(sd["failed_nodes"]),
                        )
                        self.set_state(sid, sd, "error")
                        return False
            target = self.select_service_node(sid, cd, sd, preference)
            if target and target != sd["node"]:
                kind = "migrate" if sd.get("running") else "relocate"
                self.log(
                    self.master,
                    "pve-ha-crm",
                    "info",
                    f"{'migrate' if kind == 'migrate' else 'relocate'} service '{sid}' to node '{target}'" + (" (running)" if kind == "migrate" else ""),
                )
                self.set_state(sid, sd, kind, target=target)
            elif preference == "try-next" and target is None:
                self.log(
                    self.master,
                    "pve-ha-crm",
                    "warning",
                    f"Start Error Recovery: Tried all available nodes for service '{sid}', retry start on "
                    "current node. Tried nodes: " + ", ".join(sd.get("failed_nodes") or []),
                )
            elif result is not None and result != SUCCESS:
                self.restarts.pop(sid, None)  # a new start round on this node
            return False
        return False

    # ------------------------------------------------------------------ LRM

    def lrm(self, node: str) -> None:
        for sid, sd in sorted(self.ss.items()):
            if sd["node"] != node or sid in self.jobs:
                continue
            vm = self.vm_of(sid)
            if vm is None:
                continue
            state = sd["state"]
            running = self.pve.lab_vm_running(vm)
            if state == "started":
                if running and not sd.get("running") and sid not in self.results:
                    self.results[sid] = SUCCESS
                if not running:
                    if sd.get("running"):
                        self.log(node, "pve-ha-lrm", "warning", f"service '{sid}' is not running, restarting")
                        sd.pop("running", None)
                    self.spawn(sid, self.job_start(sid, node))
            elif state in ("request_stop", "stopped", "error") and running:
                self.spawn(sid, self.job_stop(sid, node))
            elif state in ("migrate", "relocate"):
                self.spawn(sid, self.job_migrate(sid, node, sd.get("target"), online=(state == "migrate")))

    def spawn(self, sid: str, coro) -> None:
        task = asyncio.ensure_future(coro)
        self.jobs[sid] = task

        def done(t: asyncio.Task) -> None:
            if self.jobs.get(sid) is t:
                del self.jobs[sid]
            if not t.cancelled() and t.exception() is not None:
                LOG.error("HA job for %s failed: %r", sid, t.exception())
                self.results[sid] = ERROR
            self.wake()

        task.add_done_callback(done)

    async def job_start(self, sid: str, node: str) -> None:
        vm = self.vm_of(sid)
        max_restart = int(self.conf(sid)["max_restart"])
        self.log(node, "pve-ha-lrm", "info", f"starting service {sid}")
        while True:
            ok, message = await self.pve.lab_task_start(vm, node)
            sd = self.ss.get(sid)
            if sd is None or sd["state"] != "started" or sd["node"] != node:
                return
            if ok:
                self.log(node, "pve-ha-lrm", "info", f"service status {sid} started")
                self.restarts.pop(sid, None)
                self.results[sid] = SUCCESS
                return
            self.log(node, "pve-ha-lrm", "err", f"unable to start service {sid}: {message}")
            tries = self.restarts.get(sid, 0)
            if tries >= max_restart:
                self.log(node, "pve-ha-lrm", "err", f"service '{sid}' - start failed, giving up after {tries} restart(s) on node '{node}'")
                self.restarts.pop(sid, None)
                self.results[sid] = ERROR
                return
            self.restarts[sid] = tries + 1
            self.log(node, "pve-ha-lrm", "warning", f"restart policy: retry number {tries + 1} for service '{sid}'")
            await asyncio.sleep(self.secs(TICK))

    async def job_stop(self, sid: str, node: str) -> None:
        vm = self.vm_of(sid)
        self.log(node, "pve-ha-lrm", "info", f"stopping service {sid}")
        ok, _message = await self.pve.lab_task_stop(vm, node)
        self.log(node, "pve-ha-lrm", "info", f"service status {sid} stopped")
        self.results[sid] = SUCCESS if ok else ERROR

    async def job_migrate(self, sid: str, node: str, target: str | None, online: bool) -> None:
        vm = self.vm_of(sid)
        if target is None:
            self.results[sid] = ERROR
            return
        ok, message = await self.pve.lab_task_migrate(vm, node, target, online)
        if not ok:
            self.log(node, "pve-ha-lrm", "err", f"service {sid} not moved ({message})")
        self.results[sid] = SUCCESS if ok else ERROR

    # ------------------------------------------------------------------ status

    def status_current(self, local: str) -> list[dict[str, Any]]:
        """GET /cluster/ha/status/current as LOCAL answers it (Status.pm of PVE 8 / 9.0)."""
        wall = time.time()
        quorate = self.quorate() and local in self.partition()
        res: list[dict[str, Any]] = [
            {"id": "quorum", "type": "quorum", "node": local, "status": "OK" if quorate else f"No quorum on node '{local}'!", "quorate": 1 if quorate else 0}
        ]
        stale = self.secs(STATUS_STALE)
        if self.master is not None and self.master_ts is not None:
            status = self._ts_status(wall, self.master_ts, stale)
            if quorate and status != "active" and not self.resources:
                status = "idle"
            res.append(
                {
                    "id": "master",
                    "type": "master",
                    "node": self.master,
                    "status": f"{self.master} ({status}, {ctime(self.master_ts)})",
                    "timestamp": int(self.master_ts),
                }
            )
        for node in sorted(self.node_status):
            ts = self.lrm_ts.get(node)
            if not ts:
                res.append({"id": f"lrm:{node}", "type": "lrm", "node": node, "status": f"{node} (unable to read lrm status)"})
                continue
            status = self._ts_status(wall, ts, stale)
            mode = self.lrm_mode.get(node) or "active"
            if status == "active":
                if mode != "active":
                    status = f"{mode} mode"
                else:
                    # Status.pm: the LRM's state as written; idle when waiting with no active service
                    state = self.lrm_state_written.get(node) or "unknown"
                    status = "idle" if state == "wait_for_agent_lock" and not self.active_count(node) else state
            elif mode == "maintenance":
                status = "maintenance mode"
            res.append({"id": f"lrm:{node}", "type": "lrm", "node": node, "status": f"{node} ({status}, {ctime(ts)})", "timestamp": int(ts)})

        def service(sid: str, sd: dict[str, Any] | None) -> None:
            cd = self.conf(sid) if sid in self.resources else None
            data: dict[str, Any] = {"id": f"service:{sid}", "type": "service", "sid": sid}
            if sd:
                data["node"] = sd["node"]
                data["crm_state"] = sd["state"]
            elif cd:
                data["node"] = cd["node"]
            node = data.get("node") or "---"
            data["state"] = self.verbose_state(sid, sd)
            data["status"] = f"{sid} ({node}, {data['state']})"
            if cd:
                data["request_state"] = cd["state"]
                for key in ("group", "max_restart", "max_relocate", "failback", "comment"):
                    if key in self.resources[sid] or key in ("max_restart", "max_relocate", "failback"):
                        if key == "group" and self.pve.mode == "rules":
                            continue
                        if cd.get(key) is not None:
                            data[key] = cd[key]
            res.append(data)

        for sid in sorted(self.ss):
            service(sid, self.ss[sid])
        for sid in sorted(self.resources):
            if sid not in self.ss:
                service(sid, None)
        return res

    @staticmethod
    def _ts_status(wall: float, ts: float, stale: float) -> str:
        diff = wall - ts
        if diff > stale:
            return "old timestamp - dead?"
        if diff < -2:
            return "detected time drift!"
        return "active"

    def manager_status(self, local: str) -> dict[str, Any]:
        """GET /cluster/ha/status/manager_status."""
        ss = {}
        for sid, sd in self.ss.items():
            entry = {"node": sd["node"], "state": sd["state"], "uid": hashlib.md5(f"{sid}{sd}".encode()).hexdigest()[:22]}
            if sd.get("running"):
                entry["running"] = 1
            if sd.get("target"):
                entry["target"] = sd["target"]
            if sd.get("failed_nodes"):
                entry["failed_nodes"] = list(sd["failed_nodes"])
            ss[sid] = entry
        manager = {"node_status": dict(self.node_status), "service_status": ss}
        if self.master is not None:
            manager["master_node"] = self.master
            manager["timestamp"] = int(self.master_ts or 0)
        data: dict[str, Any] = {"manager_status": manager, "quorum": {"node": local, "quorate": "1" if self.quorate() and local in self.partition() else "0"}}
        lrm = {}
        for node in sorted(self.node_status):
            lrm[node] = {
                "mode": self.lrm_mode.get(node, "active"),
                "state": self.lrm_state_written.get(node, "wait_for_agent_lock"),
                "timestamp": int(self.lrm_ts.get(node, 0)),
                "results": {},
            }
        data["lrm_status"] = lrm
        return data

    def cli_status(self, local: str) -> str:
        """`ha-manager status` output."""
        return "".join(f"{e['type']} {e['status']}\n" for e in self.status_current(local))
