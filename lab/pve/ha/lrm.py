"""Each node's local resource manager, after pve-ha-manager's LRM.pm: its states
(wait_for_agent_lock, active, lost_agent_lock), the agent lock and the watchdog (Env/PVE2.pm), the
unit pve-ha-lrm (Service/pve_ha_lrm.pm: stop = restart mode, services frozen), and the workers that
start, stop and migrate its services' VMs through the lab's tasks (exec_resource_agent)."""

from __future__ import annotations

import asyncio
import time

from lab.pve.ha.common import (
    ERROR,
    FENCE_DELAY,
    IGNORED,
    LOG,
    LRM_ROUND,
    MAX_ACTIVE_IDLE_ROUNDS,
    SUCCESS,
    TICK,
)
from lab.pve.units import ACTIVE, DEACTIVATING, INACTIVE


class LrmMixin:
    """The LRM of every node (LRM.pm). A part of :class:`lab.pve.ha.manager.HaManager`, whose state it reads and writes."""

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
        # update_service_status: the node's maintenance request sets the LRM's mode (not while it
        # shuts down or restarts), and its withdrawal sets it active again
        if node not in self.shutdown_request and self.lrm_daemon_mode.get(node) in ("active", "maintenance"):
            self.lrm_daemon_mode[node] = "maintenance" if self.node_request.get(node, {}).get("maintenance") else "active"
        maintenance = self.lrm_daemon_mode.get(node) == "maintenance"
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
            elif maintenance:
                self.take_agent_lock(node, now)
                self.set_lrm_state(node, "maintenance")
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

        elif state == "maintenance":
            busy = self.active_count(node) or any(self.ss.get(sid, {}).get("node") == node for sid in self.jobs)
            if fence:
                self.log(node, "pve-ha-lrm", "err", "node needs to be fenced during maintenance mode - releasing agent_lock")
                self.set_lrm_state(node, "lost_agent_lock")
            elif busy:
                if quorate:
                    self.take_agent_lock(node, now)  # kept while services still leave the node
                else:
                    self.set_lrm_state(node, "lost_agent_lock")
            elif not maintenance:
                if quorate:
                    self.take_agent_lock(node, now)
                    self.set_lrm_state(node, "active")
                else:
                    self.set_lrm_state(node, "lost_agent_lock")
            else:
                # every active service left: watchdog closed, agent lock released (LRM.pm work, maintenance)
                self.give_up_watchdog(node)
                self.lock_renewed[node] = 0.0

    def lrm_unit(self, node: str) -> str:
        return self.pve.units.state(node, "pve-ha-lrm")

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

    def node_shutdown(self, node: str, reboot: bool, policy: str | None) -> str:
        """A graceful `reboot` or `shutdown -h now` on NODE: LRM.pm shutdown_request (Env/PVE2.pm
        is_node_shutdown finds the shutdown job) with datacenter.cfg's ha shutdown_policy
        (default conditional): `migrate` is maintenance mode (the services move away first);
        otherwise every service of the node is stopped, then frozen (`freeze`, or `conditional`
        on a reboot: mode restart, they start again on this node once it is back) or left to the
        CRM (`failover`, or `conditional` on a poweroff: mode shutdown, recovered elsewhere once the
        node is gone). The node powers off once :meth:`lrm_exited` (control_app.py)."""
        policy = policy or "conditional"
        kind = "reboot" if reboot else "shutdown"
        self.log(node, "pve-ha-lrm", "info", f"got shutdown request with shutdown policy '{policy}'")
        if policy not in ("conditional", "freeze", "failover", "migrate"):
            self.log(node, "pve-ha-lrm", "err", f"unknown shutdown policy '{policy}', fall back to conditional")
            policy = "conditional"
        maintenance = policy == "migrate"
        freeze_all = reboot if policy == "conditional" else policy == "freeze"
        if not maintenance:  # *always* stop the node's services on a shutdown (queue_resource_command request_stop)
            for sid, sd in sorted(self.ss.items()):
                vm = self.vm_of(sid)
                if sd["node"] == node and vm is not None and self.pve.lab_vm_running(vm) and sid not in self.jobs:
                    self.spawn(sid, self.job_stop(sid, node, record=False))
        if self.lrm_daemon_mode.get(node) == "maintenance":
            why = "ignore maintenance policy, already in maintenance mode" if maintenance else f"ignore {policy} policy as manual maintenance mode is enabled"
            self.log(node, "pve-ha-lrm", "info", f"{kind} LRM, {why}")
        elif maintenance:
            self.log(node, "pve-ha-lrm", "info", f"{kind} LRM, doing maintenance, removing this node from active list")
            self.lrm_daemon_mode[node] = "maintenance"
        elif freeze_all:
            self.log(node, "pve-ha-lrm", "info", f"{kind} LRM, stop and freeze all services")
            self.lrm_daemon_mode[node] = "restart"
        else:
            self.log(node, "pve-ha-lrm", "info", "shutdown LRM, stop all services")
            self.lrm_daemon_mode[node] = "shutdown"
        self.shutdown_request[node] = reboot
        if self.can_write(node):
            self.write_lrm_status(node, time.time())
        self.wake()
        return policy

    def lrm_exited(self, node: str) -> bool:
        """LRM.pm work with a shutdown request: the LRM ends (its watchdog closed, its agent lock
        released) once restart or maintenance mode left no active service and no worker, once
        shutdown mode's stops are done, or at once when it is idle (wait_for_agent_lock)."""
        if node not in self.shutdown_request:
            return False
        workers = any(self.ss.get(sid, {}).get("node") == node for sid in self.jobs)
        mode = self.lrm_daemon_mode.get(node)
        done = self.lrm_state.get(node) == "wait_for_agent_lock" or (not workers and (mode == "shutdown" or not self.active_count(node)))
        if done:
            self.give_up_watchdog(node)
            self.lock_renewed[node] = 0.0
            self.log(node, "pve-ha-lrm", "info", "server stopped")
        return done

    def lrm(self, node: str) -> None:
        if node in self.shutdown_request and self.lrm_daemon_mode.get(node) != "maintenance":
            return  # LRM.pm work: a shutting-down LRM only waits for its stop jobs
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
            elif state == "request_start_balance" and running:
                # LRM.pm exec_resource_agent: "ignoring rebalance-on-start for service ... - already running"
                self.log(node, "pve-ha-lrm", "info", f"ignoring rebalance-on-start for service {sid} - already running")
                self.results[sid] = IGNORED
            elif state in ("migrate", "relocate", "request_start_balance"):
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

    async def job_stop(self, sid: str, node: str, record: bool = True) -> None:
        """A stop; RECORD: its result goes to the CRM (a shutdown's stop jobs have no uid: not recorded)."""
        vm = self.vm_of(sid)
        self.log(node, "pve-ha-lrm", "info", f"stopping service {sid}")
        ok, _message = await self.pve.lab_task_stop(vm, node)
        self.log(node, "pve-ha-lrm", "info", f"service status {sid} stopped")
        if record:
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
