"""The cluster resource manager, after pve-ha-manager's CRM.pm (the unit pve-ha-crm, the manager
lock) and Manager.pm (manage: node states, fencing, the service state machine next_state_*,
recovery and failback) with NodeStatus.pm's fence delay."""

from __future__ import annotations

from typing import Any

from lab.pve.ha.common import (
    FENCE_DELAY,
    FENCE_REMOVABLE_LOCKS,
    IGNORED,
    LOCK_TIMEOUT,
    SUCCESS,
)
from lab.pve.ha.usage import rebalance_on_start
from lab.pve.units import ACTIVE, INACTIVE


class CrmMixin:
    """The master's CRM (CRM.pm, Manager.pm). A part of :class:`lab.pve.ha.manager.HaManager`, whose state it reads and writes."""

    def crm_unit(self, node: str) -> str:
        return self.pve.units.state(node, "pve-ha-crm")

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
        self.shutdown_request.pop(node, None)
        self.wake()

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

        # NodeStatus::update: a node whose LRM runs in maintenance mode is in `maintenance` while
        # it stays in the partition (and while its LRM says so, out of it)
        for node in self.pve.node_names:
            state = self.node_status.get(node, "unknown")
            lrm_mode = self.lrm_mode.get(node, "unknown")
            if node in part:
                self.last_online[node] = now
                if state in ("unknown", "gone"):
                    self.set_node_state(node, "online")
                elif state == "online" and lrm_mode == "maintenance":
                    self.set_node_state(node, "maintenance")
                elif state == "maintenance" and lrm_mode != "maintenance":
                    self.set_node_state(node, "online")
            elif state == "online" or (state == "maintenance" and lrm_mode != "maintenance"):
                self.set_node_state(node, "unknown")
        self.update_crm_commands()

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
                # Manager.pm manage: a new service is in request_start (or request_stop), and its
                # first round takes it on (next_state_request_start). One the lab finds running is
                # taken as started at once, marked running (so a move it needs is a live migration)
                state = ("started" if running else "request_start") if cd["state"] == "started" else ("request_stop" if running else "stopped")
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

    def update_crm_commands(self) -> None:
        """Manager.pm update_crm_commands, the node maintenance requests (`ha-manager crm-command
        node-maintenance enable|disable NODE`, CLI/ha_manager.pm node-maintenance-set)."""
        commands, self.crm_commands = self.crm_commands, []
        for cmd in commands:
            verb, _, node = cmd.partition(" ")
            state = self.node_status.get(node, "unknown")
            if verb == "enable-node-maintenance":
                if state == "online":
                    self.node_request.setdefault(node, {})["maintenance"] = 1
                elif state == "maintenance":
                    self.log(self.master, "pve-ha-crm", "info", f"ignoring crm command - node {node} is already in maintenance state")
                else:
                    self.log(self.master, "pve-ha-crm", "err", f"crm command error - node not online: {cmd}")
            elif verb == "disable-node-maintenance":
                if state != "maintenance":
                    self.log(self.master, "pve-ha-crm", "warning", f"clearing maintenance of node {node} requested, but it's in state {state}")
                self.node_request.get(node, {}).pop("maintenance", None)
                if not self.node_request.get(node):
                    self.node_request.pop(node, None)

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

        in_maintenance = self.node_status.get(sd["node"]) == "maintenance"
        if state in ("started", "stopped", "request_stop", "migrate", "relocate") and not node_online and not in_maintenance:
            if self.offline_delayed(sd["node"], now):
                if state == "stopped" and cd["state"] == "disabled":
                    return False
                self.set_state(sid, sd, "fence")
                return True
            return False
        if state == "started" and in_maintenance:
            sd["maintenance_node"] = sd["node"]  # next_state_started: the fallback for when it comes out of maintenance

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
                # next_state_stopped: "simply mark it started, if it's on the wrong node
                # next_state_started will fix that for us", through request_start; manage
                # repeats the round while a state changes
                self.set_state(sid, sd, "request_start", node=sd["node"])
                return True
            return False

        if state == "request_start":
            # next_state_request_start: with datacenter.cfg `crs: ha-rebalance-on-start=1` the
            # service first moves (offline) to the scheduler's best node
            node = sd["node"]
            if rebalance_on_start(self.pve.datacenter):
                target = self.select_service_node(sid, cd, sd, "best-score") or node
                chosen = "new" if target != node else "current"
                self.log(self.master, "pve-ha-crm", "info", f"service {sid}: re-balance selected {chosen} node {target} for startup")
                if target != node:
                    self.set_state(sid, sd, "request_start_balance", node=node, target=target)
                    return True
            self.set_state(sid, sd, "started", node=node)
            return True

        if state == "request_stop":
            if (result is not None or not self.pve.lab_vm_running(self.vm_of(sid))) and sid not in self.jobs:
                self.set_state(sid, sd, "stopped")
            return False

        if state in ("migrate", "relocate", "request_start_balance"):
            if result is None:
                return False
            if result == IGNORED:  # next_state_migrate_relocate: a rebalance of a service already running
                self.log(self.master, "pve-ha-crm", "info", f"service '{sid}' - rebalance-on-start request ignored - service already running")
                self.set_state(sid, sd, "started" if cd["state"] == "started" else "request_stop", node=sd["node"])
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
            fallback = sd.get("maintenance_node")
            if target and target != sd["node"] and fallback:
                if target == fallback:
                    self.log(self.master, "pve-ha-crm", "info", f"moving service '{sid}' back to '{fallback}', node came back from maintenance.")
                    sd.pop("maintenance_node", None)
                elif sd["node"] != fallback:
                    self.log(self.master, "pve-ha-crm", "info", f"dropping maintenance fallback node '{fallback}' for '{sid}'")
                    sd.pop("maintenance_node", None)
            elif fallback and sd["node"] == fallback and self.node_status.get(sd["node"]) == "online":
                self.log(self.master, "pve-ha-crm", "info", f"service '{sid}': clearing stale maintenance node '{fallback}' setting (is current node)")
                sd.pop("maintenance_node", None)
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
