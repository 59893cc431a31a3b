"""The systemd units of the lab's PVE nodes: what `systemctl is-active|status|start|stop|restart`
on a node sees and changes (the node shims ask the control channel, which asks this model).

Every node has the units of a PVE 8/9 node that the runbook and the project look at (UNITS). A
unit is `active` (running), `deactivating` (its stop is under way: systemd's state while ExecStop
and the daemon's own shutdown run, e.g. pve-ha-lrm freezing its services) or `inactive` (dead).
A powered-off node shows every unit inactive whatever was recorded; powering it on again
(`restore` after `poweroff`) is a boot: every unit active again, with new pids and a new `since`.

What a unit's state means for the cluster is modelled where it matters: pve-ha-lrm and
pve-ha-crm in ha/ (a stopped LRM freezes its services and stops updating its status; a stopped
CRM is never master). Stopping any other unit changes only what systemctl shows: the lab does not
model, e.g., that a stopped pveproxy no longer serves the API, nor what watchdog-mux's stop
means for fencing (see docs/how-it-works.md).
"""

from __future__ import annotations

import time
from typing import Any

ACTIVE, DEACTIVATING, INACTIVE = "active", "deactivating", "inactive"
# systemd's sub-state of a service for each active state (`systemctl show -p SubState`;
# deactivating: ExecStop runs, e.g. `pve-ha-lrm stop` waiting for the daemon to exit)
SUB = {ACTIVE: "running", DEACTIVATING: "stop", INACTIVE: "dead"}

# unit -> the main pid the lab shows for it at boot (a plausible early-boot pid, stable so a
# test can tell a restarted daemon by its new pid)
UNITS: dict[str, int] = {
    "pve-ha-lrm": 1201,
    "pve-ha-crm": 1187,
    "pve-cluster": 913,
    "corosync": 1002,
    "pvedaemon": 1145,
    "pveproxy": 1160,
    "pvestatd": 1130,
    "watchdog-mux": 880,
}
ACTIONS = ("start", "stop", "restart", "try-restart")


class NodeUnits:
    """Every node's units: {node: {unit: {"state", "since", "pid"}}} (wall-clock `since`)."""

    def __init__(self, nodes: list[str], since: float | None = None) -> None:
        self.units: dict[str, dict[str, dict[str, Any]]] = {}
        self.next_pid = 20000
        for node in nodes:
            self.boot(node, since)

    def boot(self, node: str, since: float | None = None) -> None:
        """NODE (re)booted: every unit active, since SINCE (default now). The first boot gives the
        UNITS pids; later ones new pids, as a real boot would."""
        first = node not in self.units
        when = time.time() if since is None else since
        self.units[node] = {unit: {"state": ACTIVE, "since": when, "pid": pid if first else self._pid()} for unit, pid in UNITS.items()}

    def _pid(self) -> int:
        self.next_pid += 1
        return self.next_pid

    def known(self, unit: str) -> bool:
        return unit in UNITS

    def state(self, node: str, unit: str) -> str:
        """The recorded state of NODE's UNIT (the caller knows whether the node is powered)."""
        return str(self.units[node][unit]["state"])

    def set(self, node: str, unit: str, state: str) -> bool:
        """Record UNIT's STATE on NODE; a start gets a new pid. Returns whether it changed."""
        entry = self.units[node][unit]
        if entry["state"] == state:
            return False
        if state == ACTIVE:
            entry["pid"] = self._pid()
        entry["state"] = state
        entry["since"] = time.time()
        return True

    def view(self, node: str, powered: bool) -> dict[str, dict[str, Any]]:
        """What the control channel answers for `systemctl` on NODE: {unit: {"active": state,
        "sub": sub-state, "since": wall clock, "pid": main pid (None when not running)}}."""
        out = {}
        for unit, entry in self.units[node].items():
            state = entry["state"] if powered else INACTIVE
            out[unit] = {
                "active": state,
                "sub": SUB[state],
                "since": entry["since"],
                "pid": entry["pid"] if state != INACTIVE else None,
            }
        return out
