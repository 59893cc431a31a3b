"""The lab's HA manager: config (resources, groups, rules), the manager status, and the loop that
plays every node's daemons each round (see lab/pve/ha/__init__.py)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import time
from typing import Any

from lab.pve.ha.common import (
    LOG,
    TICK,
    HaCluster,
    sid_parts,
)
from lab.pve.ha.crm import CrmMixin
from lab.pve.ha.lrm import LrmMixin
from lab.pve.ha.rules import RulesMixin
from lab.pve.ha.status import StatusMixin
from lab.pve.units import ACTIVE, INACTIVE


class HaManager(RulesMixin, LrmMixin, CrmMixin, StatusMixin):
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
        # Manager.pm: the manager status's node_request ({node: {"maintenance": 1}}), and the
        # crm_commands file the CRM reads each round (Config.pm queue_crm_commands)
        self.node_request: dict[str, dict[str, int]] = {}
        self.crm_commands: list[str] = []
        # LRM.pm shutdown_request of a node shutting down gracefully: node -> a reboot (True) or a poweroff
        self.shutdown_request: dict[str, bool] = {}
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
                if self.lrm_unit(node) == ACTIVE and self.lrm_state[node] in ("active", "maintenance"):
                    self.lrm(node)  # LRM.pm work: an active LRM, or one in maintenance, manages its resources
        self.finish_lrm_stops()
