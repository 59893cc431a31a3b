"""What the HA manager shows: API2/HA/Status.pm (`/cluster/ha/status/current`, `manager_status`)
and `ha-manager status` (PVE/CLI/ha_manager.pm)."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from lab.pve.ha.common import (
    STATUS_STALE,
    ctime,
)


class StatusMixin:
    """Status answers (Status.pm). A part of :class:`lab.pve.ha.manager.HaManager`, whose state it reads and writes."""

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
            if sd.get("maintenance_node"):
                entry["maintenance_node"] = sd["maintenance_node"]
            ss[sid] = entry
        manager = {"node_status": dict(self.node_status), "service_status": ss}
        if self.node_request:
            manager["node_request"] = {n: dict(r) for n, r in self.node_request.items()}
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
